"""Infrastructure: distributed processes, errors, preemption, output paths, the tools' CLI."""
