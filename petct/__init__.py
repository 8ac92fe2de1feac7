"""Code shared by the kit's containers: image I/O with geometry checks, grand-challenge layout, phantoms."""
