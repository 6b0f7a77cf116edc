//! How the operator names itself to the API server: the field manager of its writes and the
//! reporter of its Events. A leaf, so that every module that writes or reports (the
//! controller, the certificate manager, the webhook's event publisher, the Lease) can use it
//! without importing one another.

use kube::runtime::events::Reporter;

/// The field manager of every write the operator makes (server-side apply and patches).
pub const FIELD_MANAGER: &str = "monasca-operator";

/// The Event reporter: the operator, and the pod it runs in when known.
pub fn reporter() -> Reporter {
    Reporter {
        controller: FIELD_MANAGER.into(),
        instance: std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()),
    }
}
