"""Inference engines behind one async batched interface (`serve.engines.base.Engine`)."""
