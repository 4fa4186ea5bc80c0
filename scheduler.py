"""The scheduler process: `python scheduler.py` (the same as `newsletter scheduler run`)."""

from newsletter.cli import main

if __name__ == "__main__":
    main(["scheduler", "run"])
