"""EZ-VSL: Localizing Visual Sounds the Easy Way (Mo & Morgado, ECCV 2022)."""
