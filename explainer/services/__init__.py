"""Where the explainer's logic lives; views and consumers only call these."""
