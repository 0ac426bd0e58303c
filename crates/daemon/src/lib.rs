//! vmnap-daemon (being written).
