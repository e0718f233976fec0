"""Pictures and files: images in and out of model space, grids, the procedural disks, outputs checked before
any work and written atomically."""
