"""duet-tune: measure Triton configs of whole ensembles under load and publish the best as a new release."""
