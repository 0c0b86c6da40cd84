"""motor-anomaly model server: `python -m fogline.library.motor_anomaly`."""

from fogline.library.motor_models import main_anomaly

if __name__ == "__main__":
    main_anomaly()
