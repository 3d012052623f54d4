"""Auto-labelling that checks itself: calibration, the review queue, and the loop back into fine-tuning."""
