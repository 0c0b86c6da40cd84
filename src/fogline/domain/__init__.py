"""Pure types and rules shared by every context. No I/O lives here."""
