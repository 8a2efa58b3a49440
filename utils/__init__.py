"""The machinery the commands at the root share, one module per concern. None of it sees the
command line: each command resolves its flags once (flags.py) into the typed settings here.

    settings      a run's settings by concern: data, runtime, loop, model, optimizer, GAN
    runfiles      the run folder's contract: every file's name and which generator samples
    errors        the errors a user can cause and the exit codes
    console       progress bars, lines on stderr, the final JSON line
    runtime       device, precision, memory format, compilation: decided in one place
    distributed   torchrun's processes and the stop signal
    files         atomic writes, folder locks, leftovers of killed writers, content hashes
    rundir        the run folder: its lock, a fresh run replacing an earlier one, the logs
    checkpoints   checkpoints and model files, checked on load; what a resume may change
    training      the Trainer protocol and the one epoch loop; batches; evaluation
    data          datasets by name, in memory as uint8; seeded batches
    augment       the assignment's and SimCLR's augmentations, on whole batches
    diffaug       DiffAugment, for the modern GAN
    images        image folders in and out
    sampling      a generator's noise, classes and conditioning (training, metrics, figures)
    gan           a GAN's steps and networks, whatever the loss family
    classifier    the classifier's step and the assignment's learning-rate schedule
    quality       FID, IS and KID through torch-fidelity; the classifier's metrics
    pictures      image grids and training curves
    figures/      Part 2's figures, one module each, their options and the report

Nothing here imports a command or flags.py; tests/test_layout.py keeps it so.
"""
