"""The commands of `fogline`, one module per command group; `fogline.cli.main` assembles them."""
