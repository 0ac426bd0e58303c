//! vmnap-lab (being written).
