"""The networks: ResNet encoders, MLP heads, online and EMA target networks, SyncBN."""
