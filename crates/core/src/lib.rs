//! vmnap-core (being written).
