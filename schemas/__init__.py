"""Every on-disk and config format of tokenmill, explicit and versioned."""
