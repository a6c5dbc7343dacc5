"""Selection: turning MC-dropout predictions into the batch of pool samples to label."""
