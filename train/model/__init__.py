"""The network: building it per stage, ImageNet weights, the device and strategy, seeding, the kept model of a sweep."""
