//! The monasca operator: admission webhook and controller (built in later issues).
