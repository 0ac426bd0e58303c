//! vmnap-config (being written).
