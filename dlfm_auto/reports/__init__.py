"""Reports: final evaluation, ecosystem memory, driver/lag sensitivity."""
