"""motor-failure model server: `python -m fogline.library.motor_failure`."""

from fogline.library.motor_models import main_failure

if __name__ == "__main__":
    main_failure()
