"""Training: the fit loop, one callback per concern, the network a configuration asks for (losses are in models/)."""
