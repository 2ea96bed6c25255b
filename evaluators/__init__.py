"""Ground floor of codesign: spec types, the accelerator model and the trainer."""
