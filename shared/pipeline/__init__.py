"""The pipeline: its stages, the models behind them, the Runner port that runs them, and the flow."""
