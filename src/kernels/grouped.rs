//! Grouped connection kernels (the consolidator's branches).
