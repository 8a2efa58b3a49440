"""The machinery the commands at the root share, one module per concern. None of it imports a
command or sees the command line (tests/test_layout.py keeps it so): each command resolves its
flags once (flags.py) into the typed settings here.

    a run       settings (by concern), runfiles (its files' names), rundir (its folder, lock
                and logs), checkpoints, trainer (the Trainer protocol), training (the loop)
    machinery   errors (and exit codes), extras (optional packages), console, runtime (device,
                precision, compilation), distributed (torchrun, the stop signal), files
                (atomic writes, locks, hashes)
    data        data (datasets as uint8, seeded batches), augment, diffaug, images (folders)
    models      sampling (a generator's noise and classes), gan (a GAN's steps), classifier
                (its step and schedule), quality (FID, IS, KID), pictures (grids, curves),
                figures/ (Part 2's figures and the report)
"""
