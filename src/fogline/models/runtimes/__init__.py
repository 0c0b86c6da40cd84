"""Where models run: behind one `Runtime` interface (base.py)."""
