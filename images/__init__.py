"""Building, checking and saving the kit's container images with Docker or podman (host-side tooling)."""
