//! vmnap-hypervisor (being written).
