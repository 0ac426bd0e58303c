//! vmnap-host (being written).
