"""Hard negatives beyond the batch: mined batches, the momentum queue, feature mixes, caption perturbations."""
