"""Making a model: augmentation, ScoreCAM pseudo-masks, training, ONNX export, the recipe.

May import everything else in engines (it validates with engines.evaluation).
"""
