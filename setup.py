"""MSR: self-supervised pretraining robust to aggressive augmentations, from pretraining to Detectron2 transfer."""

from setuptools import find_packages, setup

setup(
    name="msr",
    version="0.1.0",
    description="MSR self-supervised pretraining (robust to aggressive augmentations) with kNN, linear "
    "evaluation and Detectron2 transfer",
    python_requires=">=3.9",
    packages=find_packages(include=["pretrain", "pretrain.*", "transfer", "transfer.*"]),
    package_data={"pretrain.data": ["resources/*.txt"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "timm>=1.0",
        "fvcore>=0.1.5",
        "iopath>=0.1.7,<0.1.10",
        "yacs>=0.1.8",
        "pyyaml>=5.1",
        "tqdm>=4.50",
        "tensorboard>=2.10",
        "scikit-learn>=1.0",
        "numpy>=1.21",
        "Pillow>=9.0",
        "matplotlib>=3.5",
        "pycocotools>=2.0.2",
        "submitit>=1.4",
    ],
    extras_require={
        "test": ["pytest>=7.0", "ruff>=0.5"],
        "umap": ["umap-learn>=0.5"],  # tools/plot_embedding.py --method umap
    },
)
