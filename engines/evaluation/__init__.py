"""How good and how fast a model is: metrics, classical baselines (and the robust illumination
fit they share with ScoreCAM), `artifactd eval` and `artifactd bench`. It runs the model
exactly as the service does (engines.runtime.analyse).

May import engines.select, engines.data, engines.pytorch, engines.gpu and engines.runtime.
"""
