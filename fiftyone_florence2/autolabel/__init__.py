"""Auto-labelling that checks itself: calibration on a reviewed slice (and, beside it, the review queue)."""
