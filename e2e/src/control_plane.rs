//! A real Kubernetes control plane on loopback for the cluster tests, like controller-runtime's
//! envtest: `etcd`, `kube-apiserver` and `kube-controller-manager`, built from the Go module
//! proxy by `ci/control-plane/install.sh` and cached by version outside the clone.
//!
//! [`ControlPlane::start`] generates what they need in a scratch directory (a CA, the apiserver's
//! serving certificate, an admin client certificate in `system:masters`, the service-account
//! signing key, an admin kubeconfig), starts the three on free loopback ports, waits for the
//! apiserver's `/readyz` and for the controller-manager to create the `default` ServiceAccount,
//! and stops them all on drop. No kubelet and no scheduler: pods stay Pending, which is all the
//! operator's tests need (they read what the apiserver stores).
//!
//! Every process runs in its own process group and gets `SIGKILL` when the test binary dies
//! ([`crate::process::spawn_guarded`]), so a test binary killed outright leaves no orphans
//! behind; on an ordinary exit or a panic, [`Drop`] stops them (SIGTERM, then SIGKILL). [`ControlPlane::stop_apiserver`] and
//! [`ControlPlane::start_apiserver`] make an apiserver outage on the same etcd and port.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `ci/control-plane/versions.env`, the one place the pinned versions are written.
const VERSIONS: &str = include_str!("../../ci/control-plane/versions.env");

/// How long the control plane may take to come up on a loaded two-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// A pinned version from `versions.env` (`K8S_VERSION`, `K8S_OLDEST`, `ETCD_VERSION`).
pub fn pinned(key: &str) -> Option<&'static str> {
    VERSIONS.lines().find_map(|line| {
        let (k, v) = line.trim().split_once('=')?;
        (k == key).then_some(v.trim())
    })
}

/// The Kubernetes version the harness runs: `$MONASCA_K8S_VERSION`, else `K8S_VERSION`.
pub fn kubernetes_version() -> String {
    let version = std::env::var("MONASCA_K8S_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| pinned("K8S_VERSION").unwrap_or("v0").to_string());
    if version.starts_with('v') {
        version
    } else {
        format!("v{version}")
    }
}

/// Where `install.sh` caches binaries: `$MONASCA_K8S_CACHE`, else
/// `/root/.cache/monasca-sidecar/k8s` (`$HOME/.cache/...` for another user).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MONASCA_K8S_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/monasca-sidecar/k8s")
}

/// The three binaries of one version.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub version: String,
    pub etcd: PathBuf,
    pub apiserver: PathBuf,
    pub controller_manager: PathBuf,
}

impl Binaries {
    /// The cached binaries of [`kubernetes_version`], or why they are not usable (the message
    /// says how to install them).
    pub fn locate() -> Result<Binaries, String> {
        Binaries::locate_version(&kubernetes_version())
    }

    /// The cached binaries of Kubernetes `version` (`v1.30.14`), or why they are not usable.
    pub fn locate_version(version: &str) -> Result<Binaries, String> {
        let version = version.to_string();
        let etcd_version = pinned("ETCD_VERSION").unwrap_or("v0");
        let cache = cache_dir();
        let k8s = cache.join(format!("kubernetes-{version}/bin"));
        let binaries = Binaries {
            etcd: cache.join(format!("etcd-{etcd_version}/bin/etcd")),
            apiserver: k8s.join("kube-apiserver"),
            controller_manager: k8s.join("kube-controller-manager"),
            version: version.clone(),
        };
        let missing: Vec<String> = [
            &binaries.etcd,
            &binaries.apiserver,
            &binaries.controller_manager,
        ]
        .into_iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
        if missing.is_empty() {
            Ok(binaries)
        } else {
            Err(format!(
                "no control plane for Kubernetes {version}: missing {} (build it with \
                 `ci/control-plane/install.sh {version}`, or point KUBECONFIG at a disposable \
                 cluster)",
                missing.join(", ")
            ))
        }
    }
}

/// One child process, in its own process group, logging to a file.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(
        name: &'static str,
        binary: &Path,
        args: &[String],
        dir: &Path,
    ) -> Result<Process, String> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut command = Command::new(binary);
        command
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = crate::process::spawn_guarded(command)
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        Ok(Process { name, child, log })
    }

    /// `Err` with the end of its log when it has exited.
    fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); the end of {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 30)
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let group = -(self.child.id() as i32);
        // SAFETY: kill(2) with a negative pid signals the process group we created.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                // Children it may have left in its group go too.
                unsafe { libc::kill(group, libc::SIGKILL) };
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

/// The last `lines` lines of a log file.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// etcd + kube-apiserver + kube-controller-manager on loopback; stopped on drop.
pub struct ControlPlane {
    /// Stopped in reverse order of start (controller-manager, apiserver, etcd).
    processes: Vec<Process>,
    /// How the apiserver was started, to start it again ([`ControlPlane::start_apiserver`]).
    apiserver: Option<(PathBuf, Vec<String>)>,
    dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    version: String,
}

impl ControlPlane {
    /// Starts a control plane from `binaries` and waits until it serves. Not from within an
    /// async runtime (it blocks); the processes are started from the tests' launcher thread
    /// ([`crate::process::spawn_guarded`]).
    pub fn start(binaries: &Binaries) -> Result<ControlPlane, String> {
        ControlPlane::start_with(binaries, &[])
    }

    /// [`ControlPlane::start`] with extra kube-apiserver flags (a scenario that needs the
    /// apiserver configured otherwise, e.g. `--feature-gates=...`), appended after the
    /// harness's own.
    pub fn start_with(
        binaries: &Binaries,
        apiserver_flags: &[&str],
    ) -> Result<ControlPlane, String> {
        let dir = crate::scratch_dir("control-plane");
        let mut plane = ControlPlane {
            processes: Vec::new(),
            apiserver: None,
            kubeconfig: dir.join("admin.kubeconfig"),
            dir,
            server: String::new(),
            version: binaries.version.clone(),
        };
        plane.boot(binaries, apiserver_flags)?;
        Ok(plane)
    }

    fn boot(&mut self, binaries: &Binaries, apiserver_flags: &[&str]) -> Result<(), String> {
        let dir = self.dir.clone();
        let file = |name: &str| dir.join(name).display().to_string();
        write_pki(&dir)?;
        let etcd_client = crate::free_port();
        let etcd_peer = crate::free_port();
        let apiserver_port = crate::free_port();
        self.server = format!("https://127.0.0.1:{apiserver_port}");
        write_kubeconfig(
            &self.kubeconfig,
            &self.server,
            &dir.join("ca.crt"),
            &dir.join("admin.crt"),
            &dir.join("admin.key"),
        )?;

        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd_args = vec![
            "--name=e2e".to_string(),
            format!("--data-dir={}", file("etcd-data")),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=e2e={peer_url}"),
            // Throwaway data: no fsync keeps a loaded disk from slowing every write.
            "--unsafe-no-fsync=true".to_string(),
            "--log-level=warn".to_string(),
        ];
        let etcd = Process::spawn("etcd", &binaries.etcd, &etcd_args, &dir)?;
        self.processes.push(etcd);

        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".to_string(),
            "--advertise-address=127.0.0.1".to_string(),
            // Loopback cannot be the `kubernetes` Service endpoint; nothing here needs it.
            "--endpoint-reconciler-type=none".to_string(),
            format!("--secure-port={apiserver_port}"),
            format!("--cert-dir={}", file("apiserver-certs")),
            format!("--tls-cert-file={}", file("apiserver.crt")),
            format!("--tls-private-key-file={}", file("apiserver.key")),
            format!("--client-ca-file={}", file("ca.crt")),
            // ServiceAccount tokens (TokenRequest): the RBAC scenario runs the operator as its
            // ServiceAccount.
            "--service-account-issuer=https://kubernetes.default.svc".to_string(),
            format!("--service-account-key-file={}", file("sa.pub")),
            format!("--service-account-signing-key-file={}", file("sa.key")),
            "--service-cluster-ip-range=10.0.0.0/24".to_string(),
            "--authorization-mode=Node,RBAC".to_string(),
            "--profiling=false".to_string(),
        ];
        apiserver_args.extend(apiserver_flags.iter().map(|f| f.to_string()));
        self.apiserver = Some((binaries.apiserver.clone(), apiserver_args));
        self.start_apiserver()?;
        let runtime = runtime()?;
        let client = runtime.block_on(client_for(&self.kubeconfig))?;

        let controller_manager_args = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            "--bind-address=127.0.0.1".to_string(),
            format!("--secure-port={}", crate::free_port()),
            "--leader-elect=false".to_string(),
            format!("--service-account-private-key-file={}", file("sa.key")),
            format!("--root-ca-file={}", file("ca.crt")),
            "--use-service-account-credentials=false".to_string(),
        ];
        let controller_manager = Process::spawn(
            "kube-controller-manager",
            &binaries.controller_manager,
            &controller_manager_args,
            &dir,
        )?;
        self.processes.push(controller_manager);
        // The ServiceAccount controller creates `default` in every namespace: the
        // controller-manager is up and its controllers run (pods need that ServiceAccount).
        let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(client.clone(), "default");
        self.wait(
            "kube-controller-manager (the default ServiceAccount)",
            &runtime,
            || async {
                accounts
                    .get_opt("default")
                    .await
                    .map(|sa| sa.is_some())
                    .map_err(|e| e.to_string())
            },
        )?;
        Ok(())
    }

    /// Stops kube-apiserver (SIGTERM, then SIGKILL), leaving etcd and the controller-manager
    /// running: an apiserver outage. [`ControlPlane::start_apiserver`] ends it.
    pub fn stop_apiserver(&mut self) {
        for process in &mut self.processes {
            if process.name == "kube-apiserver" {
                process.stop();
            }
        }
        self.processes.retain(|p| p.name != "kube-apiserver");
    }

    /// Starts kube-apiserver with the arguments it first had (same etcd, same port, same
    /// certificates) and waits for its `/readyz`. A no-op when it is running.
    pub fn start_apiserver(&mut self) -> Result<(), String> {
        if self.processes.iter().any(|p| p.name == "kube-apiserver") {
            return Ok(());
        }
        let (binary, args) = self
            .apiserver
            .clone()
            .ok_or("the apiserver was never started")?;
        let apiserver = Process::spawn("kube-apiserver", &binary, &args, &self.dir)?;
        // After etcd, before the controller-manager: `processes` stays in start order for Drop.
        let at = self.processes.len().min(1);
        self.processes.insert(at, apiserver);
        let runtime = runtime()?;
        let client = runtime.block_on(client_for(&self.kubeconfig))?;
        self.wait("kube-apiserver /readyz", &runtime, || async {
            let request = ::http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| e.to_string())?;
            client
                .request_text(request)
                .await
                .map(|body| body.trim() == "ok")
                .map_err(|e| e.to_string())
        })
    }

    /// Polls `ready` until it is `Ok(true)`, failing early when a process exits.
    fn wait<F, Fut>(
        &mut self,
        what: &str,
        runtime: &tokio::runtime::Runtime,
        mut ready: F,
    ) -> Result<(), String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, String>>,
    {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            for process in &mut self.processes {
                process.check_running()?;
            }
            let last = match runtime.block_on(ready()) {
                Ok(true) => return Ok(()),
                Ok(false) => "not ready".to_string(),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .processes
                    .iter()
                    .map(|p| format!("--- {}:\n{}", p.log.display(), tail(&p.log, 20)))
                    .collect();
                return Err(format!(
                    "timed out after {START_TIMEOUT:?} waiting for {what} (last: {last})\n{}",
                    logs.join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The admin kubeconfig (client certificate in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The Kubernetes version running.
    pub fn version(&self) -> &str {
        &self.version
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for process in self.processes.iter_mut().rev() {
            process.stop();
        }
        if std::env::var_os("MONASCA_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A client for the cluster of a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<Client, String> {
    // kube's TLS (rustls) needs the process-wide provider; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Kubeconfig::read_from(kubeconfig)
        .map_err(|e| format!("reading {}: {e}", kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("using {}: {e}", kubeconfig.display()))?;
    Client::try_from(config).map_err(|e| format!("client for {}: {e}", kubeconfig.display()))
}

fn write(path: &Path, contents: &str) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// CA, apiserver serving certificate, admin client certificate, service-account key.
fn write_pki(dir: &Path) -> Result<(), String> {
    let err = |e: rcgen::Error| format!("generating certificates: {e}");
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = distinguished_name("monasca-e2e-ca", None);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    write(&dir.join("ca.crt"), &ca_cert.pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let names: Vec<String> = [
        "127.0.0.1",
        "localhost",
        "10.0.0.1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
    ]
    .map(String::from)
    .to_vec();
    let serving_key = KeyPair::generate().map_err(err)?;
    let mut serving = CertificateParams::new(names).map_err(err)?;
    serving.distinguished_name = distinguished_name("kube-apiserver", None);
    serving.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &issuer).map_err(err)?;
    write(&dir.join("apiserver.crt"), &serving_cert.pem())?;
    write(&dir.join("apiserver.key"), &serving_key.serialize_pem())?;

    // The admin: a client certificate whose organisation is `system:masters`.
    let admin_key = KeyPair::generate().map_err(err)?;
    let mut admin = CertificateParams::default();
    admin.distinguished_name = distinguished_name("monasca-e2e-admin", Some("system:masters"));
    admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin.signed_by(&admin_key, &issuer).map_err(err)?;
    write(&dir.join("admin.crt"), &admin_cert.pem())?;
    write(&dir.join("admin.key"), &admin_key.serialize_pem())?;

    let sa_key = KeyPair::generate().map_err(err)?;
    write(&dir.join("sa.key"), &sa_key.serialize_pem())?;
    write(&dir.join("sa.pub"), &sa_key.public_key_pem())?;
    Ok(())
}

fn distinguished_name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<(), String> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": "admin", "user": {
            "client-certificate": cert,
            "client-key": key,
        }}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
        "current-context": "e2e",
    });
    // JSON is YAML: every kubeconfig reader takes it.
    write(path, &config.to_string())
}
