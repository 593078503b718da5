// Header-only target: see include/NCCLTypes.h.
