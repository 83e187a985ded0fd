//! The control plane's certificates and keys, generated in-process with rcgen.
//!
//! One throwaway CA signs everything: the apiserver's serving certificate and the client
//! certificates of the admin user and the controller-manager. Kubernetes maps a client
//! certificate's CN to the user name and its O to groups, so `O=system:masters` makes the admin
//! a cluster admin under RBAC, and `CN=system:kube-controller-manager` gets the bootstrap role
//! the apiserver creates for it. A separate key pair signs service-account tokens.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// CN of the front-proxy client certificate (`--requestheader-allowed-names`).
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// Paths of the generated PEM files.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub apiserver_cert: PathBuf,
    pub apiserver_key: PathBuf,
    pub admin: ClientCert,
    pub controller_manager: ClientCert,
    /// The apiserver's client identity towards kubelets (used once a node exists).
    pub apiserver_kubelet_client: ClientCert,
    /// The apiserver's identity when it proxies to aggregated API servers; the same CA signs it
    /// (a test cluster needs no separate front-proxy CA).
    pub front_proxy_client: ClientCert,
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
    /// Identities of the node's components: the kubelet (`system:node:<name>` in
    /// `system:nodes`, so the Node authorizer applies), kube-proxy and kube-scheduler, whose
    /// user names the apiserver's bootstrap RBAC bindings already grant what they need.
    pub kubelet: ClientCert,
    pub kube_proxy: ClientCert,
    pub scheduler: ClientCert,
}

/// The node name every local cluster registers its kubelet under.
pub const NODE_NAME: &str = "fjord-node";

#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// DNS names and IPs the apiserver answers as: loopback, plus the in-cluster names pods use (the
/// first address of the service range is the `kubernetes` Service's cluster IP).
fn apiserver_names(service_ip: &str, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = [
        "127.0.0.1",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        service_ip,
    ]
    .map(String::from)
    .to_vec();
    names.extend(extra.iter().cloned());
    names
}

/// Generates a fresh PKI into `dir` (overwriting what is there). `extra_names` are further
/// addresses the apiserver serves on (the host end of a node's link).
pub fn generate(dir: &Path, service_ip: &str, extra_names: &[String]) -> Result<Pki> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fjord-e2e-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let write = |name: &str, pem: String| -> Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };

    let ca_cert = write("ca.crt", ca.pem())?;
    let ca_key = write("ca.key", ca.key().serialize_pem())?;

    let leaf = |common_name: &str,
                organization: Option<&str>,
                names: Vec<String>,
                usage: ExtendedKeyUsagePurpose,
                file_stem: &str|
     -> Result<ClientCert> {
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if let Some(org) = organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        Ok(ClientCert {
            cert: write(&format!("{file_stem}.crt"), cert.pem())?,
            key: write(&format!("{file_stem}.key"), key.serialize_pem())?,
        })
    };

    let serving = leaf(
        "kube-apiserver",
        None,
        apiserver_names(service_ip, extra_names),
        ExtendedKeyUsagePurpose::ServerAuth,
        "apiserver",
    )?;
    let admin = leaf(
        "fjord-admin",
        Some("system:masters"),
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        "admin",
    )?;
    let controller_manager = leaf(
        "system:kube-controller-manager",
        None,
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        "kube-controller-manager",
    )?;
    let apiserver_kubelet_client = leaf(
        "kube-apiserver-kubelet-client",
        Some("system:masters"),
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        "apiserver-kubelet-client",
    )?;

    let front_proxy_client = leaf(
        FRONT_PROXY_CLIENT,
        None,
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        "front-proxy-client",
    )?;

    let kubelet = leaf(
        &format!("system:node:{NODE_NAME}"),
        Some("system:nodes"),
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        "kubelet",
    )?;
    let kube_proxy = leaf(
        "system:kube-proxy",
        None,
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        "kube-proxy",
    )?;
    let scheduler = leaf(
        "system:kube-scheduler",
        None,
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        "kube-scheduler",
    )?;

    let sa_key = KeyPair::generate()?;
    let service_account_key = write("sa.key", sa_key.serialize_pem())?;
    let service_account_pub = write("sa.pub", sa_key.public_key_pem())?;

    Ok(Pki {
        ca_cert,
        ca_key,
        apiserver_cert: serving.cert,
        apiserver_key: serving.key,
        admin,
        controller_manager,
        apiserver_kubelet_client,
        front_proxy_client,
        service_account_key,
        service_account_pub,
        kubelet,
        kube_proxy,
        scheduler,
    })
}

/// The certificate pair `generate` wrote as `<stem>.crt`/`<stem>.key` in `pki_dir`.
pub fn client_cert(pki_dir: &Path, stem: &str) -> ClientCert {
    ClientCert {
        cert: pki_dir.join(format!("{stem}.crt")),
        key: pki_dir.join(format!("{stem}.key")),
    }
}

/// A kubeconfig that reaches `server` as the holder of `client`. File paths rather than inline
/// data keep it readable, and both kubectl and kube-rs resolve them.
pub fn kubeconfig(server: &str, ca_cert: &Path, client: &ClientCert, user: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fjord-e2e
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: fjord-e2e
  context:
    cluster: fjord-e2e
    user: {user}
    namespace: default
current-context: fjord-e2e
",
        ca = ca_cert.display(),
        cert = client.cert.display(),
        key = client.key.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_every_file_and_a_kubeconfig_pointing_at_them() {
        let dir = std::env::temp_dir().join(format!("fjord-pki-test-{}", std::process::id()));
        let pki = generate(&dir, "10.96.0.1", &["10.250.0.1".into()]).unwrap();
        for path in [
            &pki.ca_cert,
            &pki.apiserver_cert,
            &pki.admin.cert,
            &pki.service_account_pub,
        ] {
            let pem = std::fs::read_to_string(path).unwrap();
            assert!(pem.starts_with("-----BEGIN "), "{}", path.display());
        }
        assert!(std::fs::read_to_string(&pki.service_account_key)
            .unwrap()
            .contains("PRIVATE KEY"));
        let kubeconfig = kubeconfig("https://127.0.0.1:1234", &pki.ca_cert, &pki.admin, "admin");
        assert!(kubeconfig.contains("server: https://127.0.0.1:1234"));
        assert!(kubeconfig.contains(&pki.admin.key.display().to_string()));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
