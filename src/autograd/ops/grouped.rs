//! The grouped-connection op (consolidator branches).
