"""The explainer: LBLab's live dashboard, its diagrams and the bridge that feeds it."""
