"""What the commands at the root share, one module per concern.

    cli           errors and exit codes, the parser, the shared flags, run_main, console output
    runtime       device, precision, memory format, compilation: decided in one place
    distributed   torchrun's processes and the stop signal
    checkpoints   atomic checkpoints and model files, checked on load; what a resume may change
    training      the run folder and the one epoch loop of every trainer; evaluation
    data          datasets by name, in memory as uint8; seeded batches
    augment       the assignment's and SimCLR's augmentations, on whole batches
    sampling      a generator's noise, classes and conditioning (training, metrics, figures)
    gan           a GAN's steps and networks, whatever the loss family
    classifier    the classifier's step and the assignment's learning-rate schedule
    quality       FID, IS and KID through torch-fidelity; the classifier's metrics
    pictures      image grids and training curves
    figures/      Part 2's figures, one module each, and the report

Nothing here imports a command; tests/test_layout.py keeps it so.
"""
