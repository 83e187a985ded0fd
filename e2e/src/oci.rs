//! OCI image archives written by our own code, with no Docker engine and no registry.
//!
//! Why: Fjord is developed and tested on machines without Docker or any registry, yet a local
//! kubelet must run the broker and operator images. A kubelet on containerd runs whatever is in
//! containerd's `k8s.io` image store, and `ctr images import` fills that store from a tar of an
//! [OCI image layout](https://github.com/opencontainers/image-spec/blob/main/image-layout.md).
//! This module writes such archives ([`write_archive`]), checks them ([`open_archive`]),
//! smoke-runs their root filesystem in a chroot ([`smoke_run`]) and imports them ([`import`]).
//!
//! An image is one **uncompressed** layer (containerd imports it fastest; nothing is pulled over
//! a network here) holding:
//! - the files of an [`ImageSpec`], e.g. a release binary under `/usr/local/bin`;
//! - a minimal base assembled by us ([`ImageSpec::add_minimal_base`]): `/etc/passwd` and
//!   `/etc/group` with root and the non-root user `fjord` (65532:65532), `/etc/nsswitch.conf`,
//!   `/tmp` (mode 1777);
//! - because our release binaries are dynamically linked against glibc
//!   (x86_64-unknown-linux-gnu; no musl target is installed), the ELF interpreter and every shared
//!   library the binary needs, at the same absolute paths as on the build host
//!   ([`with_shared_libraries`]).
//!
//! Archives are reproducible: the same inputs give the same bytes and so the same digests
//! (entries sorted, parent directories created explicitly, fixed mtimes, explicit uid/gid, a
//! fixed `created` time in the image config).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const LAYOUT_VERSION: &str = "1.0.0";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// Annotation containerd's importer names the image after.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// The non-root user every Fjord image runs as (distroless' `nonroot` uses the same ids).
pub const NONROOT_USER: &str = "fjord";
pub const NONROOT_UID: u32 = 65532;
pub const NONROOT_GID: u32 = 65532;
/// `PATH` of the image environment unless the spec sets its own.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The image config's `created`: fixed, so digests do not change from one build to the next.
pub const CREATED: &str = "1970-01-01T00:00:00Z";
/// Modification time of every layer entry (seconds since the epoch), for the same reason.
pub const MTIME: u64 = 0;

/// The name of a Fjord image built by `cargo xtask image`: `localhost/<component>:<version>`
/// (e.g. `localhost/fjord-broker:0.1.0`). The operator's default broker image
/// (`fjord_operator::resources::statefulset::image`) is this name; xtask's tests keep them equal.
pub fn fjord_image_name(component: &str, version: &str) -> String {
    format!("localhost/{component}:{version}")
}

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// Read from this host path when the archive is written (symlinks are followed).
    Host(PathBuf),
    /// These bytes.
    Bytes(Vec<u8>),
}

/// A regular file in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// Absolute path in the image, e.g. `/usr/local/bin/fjord-broker`.
    pub path: String,
    pub source: FileSource,
    /// Permission bits, e.g. `0o755`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl ImageFile {
    /// A root-owned file copied from `source` on the host.
    pub fn host(source: impl Into<PathBuf>, path: impl Into<String>, mode: u32) -> ImageFile {
        ImageFile {
            path: path.into(),
            source: FileSource::Host(source.into()),
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// A root-owned file with the given contents.
    pub fn bytes(path: impl Into<String>, contents: impl Into<Vec<u8>>, mode: u32) -> ImageFile {
        ImageFile {
            path: path.into(),
            source: FileSource::Bytes(contents.into()),
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

/// A directory in the image. Parents of files and directories that are not listed are created
/// as `0755 root:root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDir {
    /// Absolute path in the image, e.g. `/var/lib/fjord`.
    pub path: String,
    /// Permission bits including sticky/setgid, e.g. `0o1777` for `/tmp`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl ImageDir {
    pub fn new(path: impl Into<String>, mode: u32, uid: u32, gid: u32) -> ImageDir {
        ImageDir {
            path: path.into(),
            mode,
            uid,
            gid,
        }
    }
}

/// Everything an image is made of: its layer's contents and its runtime config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSpec {
    /// Fully qualified name with tag, e.g. `localhost/fjord-broker:0.1.0` or
    /// `docker.io/library/pause:3.10`; becomes the containerd image name on import.
    pub name: String,
    pub files: Vec<ImageFile>,
    pub dirs: Vec<ImageDir>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `uid:gid` (or a user name from the image's `/etc/passwd`); empty means root.
    pub user: String,
    /// `KEY=value` entries; [`DEFAULT_PATH`] is added when none sets `PATH`.
    pub env: Vec<String>,
    /// e.g. `9092/tcp`.
    pub exposed_ports: Vec<String>,
    pub working_dir: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl ImageSpec {
    /// An empty image called `name`.
    pub fn new(name: impl Into<String>) -> ImageSpec {
        ImageSpec {
            name: name.into(),
            ..ImageSpec::default()
        }
    }

    /// The tag of [`ImageSpec::name`]: `0.1.0` for `localhost/fjord-broker:0.1.0`.
    pub fn tag(&self) -> Result<&str> {
        image_tag(&self.name)
    }

    /// Adds the minimal base every image here needs: `/etc/passwd` and `/etc/group` (root and
    /// `fjord` 65532:65532, no login shell), their home directories, `/etc/nsswitch.conf`
    /// (`hosts: files dns`) and `/tmp` (1777). Shared libraries are added separately
    /// ([`with_shared_libraries`]).
    pub fn add_minimal_base(&mut self) {
        let passwd = format!(
            "root:x:0:0:root:/root:/sbin/nologin\n\
             {NONROOT_USER}:x:{NONROOT_UID}:{NONROOT_GID}:{NONROOT_USER}:/home/{NONROOT_USER}:/sbin/nologin\n"
        );
        let group = format!("root:x:0:\n{NONROOT_USER}:x:{NONROOT_GID}:\n");
        let nsswitch = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n\
                        networks: files\nprotocols: files\nservices: files\n";
        self.files.extend([
            ImageFile::bytes("/etc/passwd", passwd, 0o644),
            ImageFile::bytes("/etc/group", group, 0o644),
            ImageFile::bytes("/etc/nsswitch.conf", nsswitch, 0o644),
        ]);
        self.dirs.extend([
            ImageDir::new("/tmp", 0o1777, 0, 0),
            ImageDir::new("/root", 0o700, 0, 0),
            ImageDir::new(
                format!("/home/{NONROOT_USER}"),
                0o700,
                NONROOT_UID,
                NONROOT_GID,
            ),
        ]);
    }
}

fn image_tag(name: &str) -> Result<&str> {
    ensure!(
        !name.contains('@'),
        "image name {name:?}: digest references are not supported, give a tag"
    );
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((repo, tag)) if !repo.is_empty() && !tag.is_empty() => Ok(tag),
        _ => bail!("image name {name:?} has no tag (expected e.g. localhost/fjord-broker:0.1.0)"),
    }
}

/// Adds the ELF interpreter and every shared library `binary` needs (see [`shared_libraries`])
/// to `spec`, each at its own absolute path, root-owned, mode 0755. Paths the spec already has
/// are left alone.
pub fn with_shared_libraries(spec: &mut ImageSpec, binary: &Path) -> Result<()> {
    for library in shared_libraries(binary)? {
        let path = library
            .to_str()
            .with_context(|| format!("library path {} is not UTF-8", library.display()))?
            .to_string();
        if !spec.files.iter().any(|f| f.path == path) {
            spec.files.push(ImageFile::host(library, path, 0o755));
        }
    }
    Ok(())
}

/// The absolute paths of the ELF interpreter (`PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2`)
/// and of every shared library `ldd` resolves for `binary`, sorted, without duplicates. Empty for
/// a static binary. Fails when a library is not found. Libraries a program `dlopen`s itself are
/// not seen (glibc ≥ 2.34 has the `files` and `dns` NSS modules built into libc, so name lookups
/// need none).
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let interpreter = elf_interpreter(binary)?;
    let mut libraries: Vec<PathBuf> = interpreter.iter().cloned().collect();
    if interpreter.is_none() {
        return Ok(libraries);
    }
    let output = Command::new("ldd")
        .arg(binary)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LD_PRELOAD")
        .output()
        .context("could not run ldd (Debian package libc-bin)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "ldd {} failed ({}): {}{}",
            binary.display(),
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let (found, missing) = parse_ldd(&stdout);
    ensure!(
        missing.is_empty(),
        "{} needs shared libraries that are not installed: {}",
        binary.display(),
        missing.join(", ")
    );
    libraries.extend(found);
    libraries.sort();
    libraries.dedup();
    Ok(libraries)
}

/// `ldd` output → (resolved absolute paths, names of libraries "not found"). The vDSO has no
/// file and is skipped.
fn parse_ldd(stdout: &str) -> (Vec<PathBuf>, Vec<String>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, target) = match line.split_once("=>") {
            Some((name, target)) => (name.trim(), target.trim()),
            None => (line, line),
        };
        if target.starts_with("not found") {
            missing.push(name.to_string());
            continue;
        }
        // "/lib/x86_64-linux-gnu/libc.so.6 (0x00007f...)"
        let path = target.split(" (").next().unwrap_or(target).trim();
        if path.starts_with('/') {
            found.push(PathBuf::from(path));
        }
    }
    (found, missing)
}

/// The program interpreter named in a 64-bit little-endian ELF file's `PT_INTERP` header, or
/// `None` for a static binary.
pub fn elf_interpreter(binary: &Path) -> Result<Option<PathBuf>> {
    let mut file =
        File::open(binary).with_context(|| format!("cannot open {}", binary.display()))?;
    let mut header = [0u8; 64];
    file.read_exact(&mut header)
        .with_context(|| format!("{} is too short for an ELF file", binary.display()))?;
    ensure!(
        &header[..4] == b"\x7fELF" && header[4] == 2 && header[5] == 1,
        "{} is not a 64-bit little-endian ELF file",
        binary.display()
    );
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let phoff = u64_at(&header, 0x20);
    let phentsize = usize::from(u16_at(&header, 0x36));
    let phnum = usize::from(u16_at(&header, 0x38));
    ensure!(
        phentsize >= 56,
        "{}: bad ELF program header size",
        binary.display()
    );
    let mut headers = vec![0u8; phentsize * phnum];
    file.seek(SeekFrom::Start(phoff))?;
    file.read_exact(&mut headers)?;
    const PT_INTERP: u32 = 3;
    for ph in headers.chunks_exact(phentsize) {
        if u32_at(ph, 0) != PT_INTERP {
            continue;
        }
        let (offset, size) = (u64_at(ph, 8), u64_at(ph, 32));
        ensure!(size < 4096, "{}: PT_INTERP is too long", binary.display());
        let mut interp = vec![0u8; size as usize];
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(&mut interp)?;
        let end = interp.iter().position(|&b| b == 0).unwrap_or(interp.len());
        let interp = std::str::from_utf8(&interp[..end])
            .with_context(|| format!("{}: PT_INTERP is not UTF-8", binary.display()))?;
        return Ok(Some(PathBuf::from(interp)));
    }
    Ok(None)
}

/// What [`write_archive`] wrote (or [`open_archive`] found). Digests are `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenImage {
    /// Fully qualified image name (the containerd name after import).
    pub name: String,
    /// The image's identity: `ctr images ls` shows it as the image's digest after import.
    pub manifest_digest: String,
    pub config_digest: String,
    /// Digest of the (uncompressed) layer, which is also its `diff_id`.
    pub layer_digest: String,
    pub layer_size: u64,
    /// Size of the whole archive file in bytes.
    pub size: u64,
}

/// Writes `spec` as an OCI image-layout tar to `out` (parent directories are created; the file
/// is replaced atomically). See the module documentation for what the archive holds.
pub fn write_archive(spec: &ImageSpec, out: &Path) -> Result<WrittenImage> {
    let tag = spec.tag()?;
    let layer = layer_tar(spec)?;
    let layer_digest = sha256_digest(&layer);

    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let mut config = serde_json::Map::new();
    if !spec.user.is_empty() {
        config.insert("User".into(), json!(spec.user));
    }
    config.insert("Env".into(), json!(env));
    if !spec.entrypoint.is_empty() {
        config.insert("Entrypoint".into(), json!(spec.entrypoint));
    }
    if !spec.cmd.is_empty() {
        config.insert("Cmd".into(), json!(spec.cmd));
    }
    if let Some(dir) = &spec.working_dir {
        config.insert("WorkingDir".into(), json!(dir));
    }
    if !spec.exposed_ports.is_empty() {
        let ports: serde_json::Map<String, Value> = spec
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), json!({})))
            .collect();
        config.insert("ExposedPorts".into(), Value::Object(ports));
    }
    if !spec.labels.is_empty() {
        config.insert("Labels".into(), json!(spec.labels));
    }
    let config = json!({
        "created": CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": CREATED, "created_by": "fjord_e2e::oci::write_archive"}],
    });
    let config = serde_json::to_vec(&config)?;
    let config_digest = sha256_digest(&config);

    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer.len()}],
    });
    let manifest = serde_json::to_vec(&manifest)?;
    let manifest_digest = sha256_digest(&manifest);

    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                CONTAINERD_NAME_ANNOTATION: spec.name,
                REF_NAME_ANNOTATION: tag,
            },
        }],
    });
    let index = serde_json::to_vec(&index)?;
    let layout = serde_json::to_vec(&json!({"imageLayoutVersion": LAYOUT_VERSION}))?;

    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let tmp = out.with_extension("tmp");
    let file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut archive = tar::Builder::new(std::io::BufWriter::new(file));
    append_file(&mut archive, "oci-layout", &layout, 0o644, 0, 0)?;
    append_file(&mut archive, "index.json", &index, 0o644, 0, 0)?;
    append_dir(&mut archive, "blobs", 0o755, 0, 0)?;
    append_dir(&mut archive, "blobs/sha256", 0o755, 0, 0)?;
    let mut blobs = [
        (&config_digest, &config),
        (&layer_digest, &layer),
        (&manifest_digest, &manifest),
    ];
    blobs.sort();
    for (digest, bytes) in blobs {
        append_file(&mut archive, &blob_path(digest), bytes, 0o644, 0, 0)?;
    }
    archive.into_inner()?.into_inner()?.sync_all()?;
    std::fs::rename(&tmp, out)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))?;
    Ok(WrittenImage {
        name: spec.name.clone(),
        manifest_digest,
        config_digest,
        layer_digest,
        layer_size: layer.len() as u64,
        size: std::fs::metadata(out)?.len(),
    })
}

/// One entry of the layer.
enum Entry<'a> {
    Dir { mode: u32, uid: u32, gid: u32 },
    File(&'a ImageFile),
}

/// The layer tar: every file and directory of `spec` plus implied parents, sorted by path.
fn layer_tar(spec: &ImageSpec) -> Result<Vec<u8>> {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let add_parents = |entries: &mut BTreeMap<String, Entry>, path: &str| {
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            entries
                .entry(p.to_str().unwrap().to_string())
                .or_insert(Entry::Dir {
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                });
            parent = p.parent();
        }
    };
    // Listed directories first so they win over implied parents.
    for dir in &spec.dirs {
        let path = layer_path(&dir.path)?;
        let entry = Entry::Dir {
            mode: dir.mode,
            uid: dir.uid,
            gid: dir.gid,
        };
        match entries.insert(path.clone(), entry) {
            Some(Entry::Dir { mode, uid, gid })
                if (mode, uid, gid) != (dir.mode, dir.uid, dir.gid) =>
            {
                bail!("directory {} is listed twice, differently", dir.path)
            }
            _ => {}
        }
    }
    for file in &spec.files {
        let path = layer_path(&file.path)?;
        ensure!(
            !entries.contains_key(&path),
            "{} is listed twice (or also as a directory)",
            file.path
        );
        entries.insert(path, Entry::File(file));
    }
    let paths: Vec<String> = entries.keys().cloned().collect();
    for path in &paths {
        add_parents(&mut entries, path);
    }
    // A file cannot also be some other entry's parent.
    for path in &paths {
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            if let Some(Entry::File(f)) = entries.get(p.to_str().unwrap()) {
                bail!("{} is a file but {path} is inside it", f.path);
            }
            parent = p.parent();
        }
    }

    let mut layer = tar::Builder::new(Vec::new());
    for (path, entry) in &entries {
        match entry {
            Entry::Dir { mode, uid, gid } => append_dir(&mut layer, path, *mode, *uid, *gid)?,
            Entry::File(file) => {
                let bytes = match &file.source {
                    FileSource::Bytes(bytes) => std::borrow::Cow::Borrowed(bytes.as_slice()),
                    FileSource::Host(host) => std::borrow::Cow::Owned(
                        std::fs::read(host)
                            .with_context(|| format!("cannot read {}", host.display()))?,
                    ),
                };
                append_file(&mut layer, path, &bytes, file.mode, file.uid, file.gid)?;
            }
        }
    }
    Ok(layer.into_inner()?)
}

/// `/usr/local/bin/x` → `usr/local/bin/x`; rejects relative paths, `..` and the root itself.
fn layer_path(path: &str) -> Result<String> {
    let p = Path::new(path);
    ensure!(p.is_absolute(), "image path {path:?} is not absolute");
    let mut parts = Vec::new();
    for component in p.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => parts.push(
                part.to_str()
                    .with_context(|| format!("image path {path:?} is not UTF-8"))?,
            ),
            Component::ParentDir | Component::Prefix(_) => {
                bail!("image path {path:?} must not contain '..'")
            }
        }
    }
    ensure!(!parts.is_empty(), "image path {path:?} names the root");
    Ok(parts.join("/"))
}

fn header(kind: tar::EntryType, size: u64, mode: u32, uid: u32, gid: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(u64::from(uid));
    header.set_gid(u64::from(gid));
    header.set_mtime(MTIME);
    header
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, bytes.len() as u64, mode, uid, gid);
    tar.append_data(&mut h, path, bytes)
        .with_context(|| format!("cannot add {path} to the archive"))
}

fn append_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, 0, mode, uid, gid);
    tar.append_data(&mut h, format!("{path}/"), std::io::empty())
        .with_context(|| format!("cannot add {path}/ to the archive"))
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// An archive read back and checked by [`open_archive`].
#[derive(Debug, Clone)]
pub struct OpenedArchive {
    pub image: WrittenImage,
    pub index: Value,
    pub manifest: Value,
    pub config: Value,
    /// The uncompressed layer tar.
    pub layer: Vec<u8>,
}

/// Reads an archive written by [`write_archive`] and checks it the way an importer would: every
/// blob's bytes hash to its name, the index names one amd64/linux manifest with the name
/// annotations, the manifest's config and layer descriptors match their blobs in digest and
/// size, and the config's `diff_ids` equal the (uncompressed) layer digest.
pub fn open_archive(archive: &Path) -> Result<OpenedArchive> {
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let size = file.metadata()?.len();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in tar::Archive::new(std::io::BufReader::new(file)).entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        files.insert(path, bytes);
    }
    for (path, bytes) in &files {
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            let digest = sha256_digest(bytes);
            ensure!(
                digest == format!("sha256:{hex}"),
                "{}: blob {path} hashes to {digest}",
                archive.display()
            );
        }
    }
    let json = |path: &str| -> Result<Value> {
        let bytes = files
            .get(path)
            .with_context(|| format!("{}: no {path}", archive.display()))?;
        serde_json::from_slice(bytes).with_context(|| format!("{}: bad {path}", archive.display()))
    };
    let layout = json("oci-layout")?;
    ensure!(
        layout["imageLayoutVersion"] == LAYOUT_VERSION,
        "{}: oci-layout is {layout}",
        archive.display()
    );
    // Checks a descriptor against its blob and returns the blob.
    let blob = |descriptor: &Value, media_type: &str| -> Result<&Vec<u8>> {
        ensure!(
            descriptor["mediaType"] == media_type,
            "{}: expected a {media_type} descriptor, got {descriptor}",
            archive.display()
        );
        let digest = descriptor["digest"].as_str().unwrap_or_default();
        let bytes = files
            .get(&blob_path(digest))
            .with_context(|| format!("{}: no blob for {descriptor}", archive.display()))?;
        ensure!(
            descriptor["size"].as_u64() == Some(bytes.len() as u64),
            "{}: {digest} is {} bytes, the descriptor says {}",
            archive.display(),
            bytes.len(),
            descriptor["size"]
        );
        Ok(bytes)
    };
    let index = json("index.json")?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    ensure!(
        manifests.len() == 1,
        "{}: index.json must list exactly one manifest, lists {}",
        archive.display(),
        manifests.len()
    );
    let descriptor = &manifests[0];
    ensure!(
        descriptor["platform"] == json!({"architecture": "amd64", "os": "linux"}),
        "{}: manifest platform is {}",
        archive.display(),
        descriptor["platform"]
    );
    let name = descriptor["annotations"][CONTAINERD_NAME_ANNOTATION]
        .as_str()
        .with_context(|| format!("{}: no {CONTAINERD_NAME_ANNOTATION}", archive.display()))?
        .to_string();
    ensure!(
        descriptor["annotations"][REF_NAME_ANNOTATION] == image_tag(&name)?,
        "{}: {REF_NAME_ANNOTATION} is not the tag of {name}",
        archive.display()
    );
    let manifest: Value = serde_json::from_slice(blob(descriptor, MANIFEST_MEDIA_TYPE)?)?;
    let config: Value = serde_json::from_slice(blob(&manifest["config"], CONFIG_MEDIA_TYPE)?)?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    ensure!(
        layers.len() == 1,
        "{}: expected one layer, the manifest lists {}",
        archive.display(),
        layers.len()
    );
    let layer = blob(&layers[0], LAYER_MEDIA_TYPE)?.clone();
    ensure!(
        config["rootfs"] == json!({"type": "layers", "diff_ids": [layers[0]["digest"]]}),
        "{}: config rootfs {} does not match the layer",
        archive.display(),
        config["rootfs"]
    );
    let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Ok(OpenedArchive {
        image: WrittenImage {
            name,
            manifest_digest: str_of(&descriptor["digest"]),
            config_digest: str_of(&manifest["config"]["digest"]),
            layer_digest: str_of(&layers[0]["digest"]),
            layer_size: layer.len() as u64,
            size,
        },
        index,
        manifest,
        config,
        layer,
    })
}

/// Checks `archive` ([`open_archive`]) and unpacks its layer into `dir` (created if needed),
/// keeping modes and, when running as root, ownership.
pub fn unpack_rootfs(archive: &Path, dir: &Path) -> Result<OpenedArchive> {
    let opened = open_archive(archive)?;
    std::fs::create_dir_all(dir)?;
    let mut layer = tar::Archive::new(opened.layer.as_slice());
    layer.set_preserve_permissions(true);
    layer.set_preserve_ownerships(is_root());
    layer.set_preserve_mtime(true);
    layer.unpack(dir).with_context(|| {
        format!(
            "cannot unpack the layer of {} into {}",
            archive.display(),
            dir.display()
        )
    })?;
    Ok(opened)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `argv` inside `rootfs` with `chroot`, as `user` (`uid:gid`) when given, with only `env`
/// in its environment, stopping it after `timeout`. When not root it goes through
/// `unshare --user --map-root-user`, where only uid 0 exists, and `user` is ignored.
pub fn run_in_rootfs(
    rootfs: &Path,
    argv: &[&str],
    env: &[(&str, &str)],
    user: Option<&str>,
    timeout: Duration,
) -> Result<Output> {
    let mut command = if is_root() {
        let mut c = Command::new("chroot");
        if let Some(user) = user.filter(|u| !u.is_empty()) {
            c.arg(format!("--userspec={user}"));
        }
        c
    } else {
        let mut c = Command::new("unshare");
        c.args(["--user", "--map-root-user", "chroot"]);
        c
    };
    command.arg(rootfs).args(argv).env_clear();
    command.envs(env.iter().copied());
    run_with_timeout(&mut command, timeout)
}

/// Unpacks `archive` into a temporary directory and runs its entrypoint with `args` and `env` in
/// a chroot ([`run_in_rootfs`]) as the image's user: proves the image carries the interpreter and every library the
/// binary loads. Fails when the loader cannot start the program (exit 126/127, "error while
/// loading shared libraries") or when the combined output lacks `expect`; returns that output.
/// The image's own environment (e.g. `PATH`) comes first, `env` is added after it.
pub fn smoke_run(
    archive: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    expect: &str,
) -> Result<String> {
    let dir = std::env::temp_dir().join(format!(
        "fjord-oci-smoke-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    let result = (|| -> Result<String> {
        let opened = unpack_rootfs(archive, &dir)?;
        let config = &opened.config["config"];
        let mut argv: Vec<String> = config["Entrypoint"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect();
        ensure!(!argv.is_empty(), "{} has no entrypoint", archive.display());
        argv.extend(args.iter().map(|a| a.to_string()));
        let image_env: Vec<(String, String)> = config["Env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut all_env: Vec<(&str, &str)> = image_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all_env.extend_from_slice(env);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let output = run_in_rootfs(
            &dir,
            &argv,
            &all_env,
            config["User"].as_str(),
            Duration::from_secs(30),
        )?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let code = output.status.code();
        ensure!(
            !matches!(code, Some(126 | 127))
                && !text.contains("error while loading shared libraries")
                && !text.contains("failed to run command"),
            "{} does not start in its own root filesystem ({}): {}",
            argv.join(" "),
            output.status,
            text.trim()
        );
        ensure!(
            text.contains(expect),
            "{} ({}) did not print {expect:?}: {}",
            argv.join(" "),
            output.status,
            text.trim()
        );
        Ok(text)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Runs `command`, capturing its output; kills it after `timeout`.
fn run_with_timeout(command: &mut Command, timeout: Duration) -> Result<Output> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {command:?}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => Ok(output?),
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; the child is not reaped yet (the
            // waiting thread holds it), so the pid still names it.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = rx.recv();
            bail!("{command:?} did not finish within {timeout:?}; killed it")
        }
    }
}

/// Imports `archive` into containerd's `k8s.io` namespace (the one the kubelet's CRI uses) with
/// `ctr --address <socket> -n k8s.io images import --no-unpack=false`, unpacking it for the default
/// snapshotter (`CONTAINERD_SNAPSHOTTER` in the environment overrides it), then checks with
/// `ctr images ls` that containerd knows `expected.name` with exactly `expected.manifest_digest`.
pub fn import(ctr: &Path, socket: &Path, archive: &Path, expected: &WrittenImage) -> Result<()> {
    let ctr_cmd = || {
        let mut c = Command::new(ctr);
        c.arg("--address").arg(socket).args(["-n", "k8s.io"]);
        c
    };
    let check = |what: &str, output: Output| -> Result<String> {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        ensure!(
            output.status.success(),
            "{what} failed ({}): {}{}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(stdout)
    };
    let mut import = ctr_cmd();
    import
        .args(["images", "import", "--no-unpack=false"])
        .arg(archive);
    let what = format!("ctr images import {}", archive.display());
    check(
        &what,
        run_with_timeout(&mut import, Duration::from_secs(600))?,
    )?;

    let mut ls = ctr_cmd();
    ls.args(["images", "ls"]);
    let listing = check(
        "ctr images ls",
        run_with_timeout(&mut ls, Duration::from_secs(60))?,
    )?;
    // REF TYPE DIGEST SIZE PLATFORMS LABELS
    let digest = listing.lines().find_map(|line| {
        let mut columns = line.split_whitespace();
        (columns.next() == Some(expected.name.as_str()))
            .then(|| columns.nth(1).map(str::to_string))
            .flatten()
    });
    match digest {
        Some(digest) if digest == expected.manifest_digest => Ok(()),
        Some(digest) => bail!(
            "containerd has {} at {digest}, but {} holds {}",
            expected.name,
            archive.display(),
            expected.manifest_digest
        ),
        None => bail!(
            "after importing {}, containerd does not list {}:\n{listing}",
            archive.display(),
            expected.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fjord-oci-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// `/usr/bin/ls` as a stand-in for our release binaries: dynamically linked against glibc
    /// and a few more libraries (libselinux, libpcre2), so the library collection is exercised.
    fn ls_image() -> ImageSpec {
        let mut spec = ImageSpec::new("localhost/oci-test:1.2.3");
        spec.add_minimal_base();
        spec.files
            .push(ImageFile::host("/usr/bin/ls", "/usr/local/bin/ls", 0o755));
        spec.dirs.push(ImageDir::new(
            "/var/lib/fjord",
            0o755,
            NONROOT_UID,
            NONROOT_GID,
        ));
        with_shared_libraries(&mut spec, Path::new("/usr/bin/ls")).unwrap();
        spec.entrypoint = vec!["/usr/local/bin/ls".into()];
        spec.user = format!("{NONROOT_UID}:{NONROOT_GID}");
        spec.exposed_ports = vec!["9092/tcp".into()];
        spec.working_dir = Some("/var/lib/fjord".into());
        spec.labels
            .insert("org.opencontainers.image.title".into(), "oci-test".into());
        spec
    }

    #[test]
    fn image_name_scheme() {
        assert_eq!(
            fjord_image_name("fjord-broker", "0.1.0"),
            "localhost/fjord-broker:0.1.0"
        );
        assert_eq!(image_tag("localhost:5000/a/b:1.0").unwrap(), "1.0");
        assert_eq!(image_tag("docker.io/library/pause:3.10").unwrap(), "3.10");
        assert!(image_tag("localhost:5000/a").is_err());
        assert!(image_tag("a@sha256:00").is_err());
    }

    #[test]
    fn ldd_output_is_parsed() {
        let out = "\tlinux-vdso.so.1 (0x00007ffc)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f01)\n\
                   \tlibfoo.so.9 => not found\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f02)\n";
        let (found, missing) = parse_ldd(out);
        assert_eq!(
            found,
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert_eq!(missing, vec!["libfoo.so.9"]);
    }

    #[test]
    fn shared_libraries_include_the_interpreter_and_libc() {
        let libs = shared_libraries(Path::new("/usr/bin/ls")).unwrap();
        let interp = elf_interpreter(Path::new("/usr/bin/ls")).unwrap().unwrap();
        assert_eq!(interp, PathBuf::from("/lib64/ld-linux-x86-64.so.2"));
        assert!(libs.contains(&interp), "{libs:?}");
        assert!(
            libs.iter().any(|l| l.file_name().unwrap() == "libc.so.6"),
            "{libs:?}"
        );
    }

    #[test]
    fn digests_are_stable_across_writes() {
        let dir = scratch("stable");
        let spec = ls_image();
        let a = write_archive(&spec, &dir.join("a.oci.tar")).unwrap();
        let b = write_archive(&spec, &dir.join("b.oci.tar")).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            std::fs::read(dir.join("a.oci.tar")).unwrap(),
            std::fs::read(dir.join("b.oci.tar")).unwrap()
        );
        // Any change in content changes the digests.
        let mut other = spec.clone();
        other.env.push("X=1".into());
        let c = write_archive(&other, &dir.join("c.oci.tar")).unwrap();
        assert_ne!(c.config_digest, a.config_digest);
        assert_ne!(c.manifest_digest, a.manifest_digest);
        assert_eq!(c.layer_digest, a.layer_digest);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Reads the archive with nothing but `tar` and `sha2` (not [`open_archive`]) and follows the
    /// references the way containerd does.
    #[test]
    fn manifest_references_config_and_layer() {
        let dir = scratch("refs");
        let out = dir.join("image.oci.tar");
        let written = write_archive(&ls_image(), &out).unwrap();
        let mut files = BTreeMap::new();
        let mut names = Vec::new();
        for entry in tar::Archive::new(File::open(&out).unwrap())
            .entries()
            .unwrap()
        {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            names.push(path.clone());
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            files.insert(path, bytes);
        }
        assert_eq!(names[..2], ["oci-layout", "index.json"]);
        let blob = |digest: &Value| -> &Vec<u8> {
            let digest = digest.as_str().unwrap();
            let bytes =
                &files[&format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap())];
            assert_eq!(format!("sha256:{:x}", Sha256::digest(bytes)), digest);
            bytes
        };
        let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(m["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(m["digest"], written.manifest_digest);
        assert_eq!(m["platform"]["architecture"], "amd64");
        assert_eq!(m["platform"]["os"], "linux");
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            "localhost/oci-test:1.2.3"
        );
        assert_eq!(
            m["annotations"]["org.opencontainers.image.ref.name"],
            "1.2.3"
        );
        let manifest_bytes = blob(&m["digest"]);
        assert_eq!(m["size"], manifest_bytes.len());
        let manifest: Value = serde_json::from_slice(manifest_bytes).unwrap();
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert_eq!(manifest["config"]["digest"], written.config_digest);
        let config_bytes = blob(&manifest["config"]["digest"]);
        assert_eq!(manifest["config"]["size"], config_bytes.len());
        let layer = &manifest["layers"][0];
        assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar");
        assert_eq!(layer["digest"], written.layer_digest);
        assert_eq!(layer["size"], blob(&layer["digest"]).len());
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);

        let config: Value = serde_json::from_slice(config_bytes).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"], json!([written.layer_digest]));
        assert_eq!(config["created"], CREATED);
        let c = &config["config"];
        assert_eq!(c["User"], "65532:65532");
        assert_eq!(c["Entrypoint"], json!(["/usr/local/bin/ls"]));
        assert_eq!(c["Env"][0], DEFAULT_PATH);
        assert_eq!(c["ExposedPorts"], json!({"9092/tcp": {}}));
        assert_eq!(c["WorkingDir"], "/var/lib/fjord");
        assert_eq!(c["Labels"]["org.opencontainers.image.title"], "oci-test");

        // open_archive agrees, and rejects a blob whose bytes do not match its name.
        assert_eq!(open_archive(&out).unwrap().image, written);
        let mut bad = tar::Builder::new(Vec::new());
        for (path, bytes) in &files {
            let mut bytes = bytes.clone();
            if path.ends_with(written.layer_digest.strip_prefix("sha256:").unwrap()) {
                bytes[600] ^= 1;
            }
            append_file(&mut bad, path, &bytes, 0o644, 0, 0).unwrap();
        }
        std::fs::write(dir.join("bad.oci.tar"), bad.into_inner().unwrap()).unwrap();
        let error = open_archive(&dir.join("bad.oci.tar")).unwrap_err();
        assert!(error.to_string().contains("hashes to"), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn layer_holds_files_dirs_and_base_with_owners_and_modes() {
        let dir = scratch("layer");
        let out = dir.join("image.oci.tar");
        write_archive(&ls_image(), &out).unwrap();
        let layer = open_archive(&out).unwrap().layer;
        let mut seen = BTreeMap::new();
        let mut order = Vec::new();
        for entry in tar::Archive::new(layer.as_slice()).entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header().clone();
            let path = entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            assert_eq!(h.mtime().unwrap(), MTIME, "{path}");
            order.push(path.clone());
            seen.insert(
                path,
                (
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    bytes,
                ),
            );
        }
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "entries are sorted");
        let dir_entry = |p: &str| {
            let (kind, mode, uid, gid, _) = &seen[p];
            assert!(kind.is_dir(), "{p} is a directory");
            (*mode, *uid, *gid)
        };
        // Parents are created explicitly.
        for p in [
            "usr",
            "usr/local",
            "usr/local/bin",
            "etc",
            "var",
            "var/lib",
            "lib64",
        ] {
            assert_eq!(dir_entry(p), (0o755, 0, 0), "{p}");
        }
        assert_eq!(dir_entry("tmp"), (0o1777, 0, 0));
        assert_eq!(dir_entry("var/lib/fjord"), (0o755, 65532, 65532));
        let (kind, mode, uid, gid, bytes) = &seen["usr/local/bin/ls"];
        assert!(kind.is_file());
        assert_eq!((*mode, *uid, *gid), (0o755, 0, 0));
        assert_eq!(bytes, &std::fs::read("/usr/bin/ls").unwrap());
        assert!(seen.contains_key("lib64/ld-linux-x86-64.so.2"));
        let text = |p: &str| String::from_utf8(seen[p].4.clone()).unwrap();
        assert!(text("etc/passwd").contains("root:x:0:0:"));
        assert!(text("etc/passwd").contains("fjord:x:65532:65532:"));
        assert!(text("etc/group").contains("fjord:x:65532:"));
        assert!(text("etc/nsswitch.conf").contains("hosts: files dns"));
        assert_eq!(seen["etc/passwd"].1, 0o644);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn conflicting_entries_are_refused() {
        let mut spec = ImageSpec::new("localhost/x:1");
        spec.files.push(ImageFile::bytes("/a", "1", 0o644));
        spec.files.push(ImageFile::bytes("/a", "2", 0o644));
        assert!(layer_tar(&spec).is_err());
        let mut spec = ImageSpec::new("localhost/x:1");
        spec.files.push(ImageFile::bytes("/a", "1", 0o644));
        spec.files.push(ImageFile::bytes("/a/b", "2", 0o644));
        assert!(layer_tar(&spec).is_err());
        let mut spec = ImageSpec::new("localhost/x:1");
        spec.files.push(ImageFile::bytes("../a", "1", 0o644));
        assert!(layer_tar(&spec).is_err());
    }

    /// The unpacked layer is a working root filesystem: the binary starts with only the
    /// interpreter and libraries we collected, and `ls -l` resolves the owner of
    /// `/var/lib/fjord` through our `/etc/passwd`, `/etc/group` and `nsswitch.conf`.
    #[test]
    fn rootfs_runs_the_binary_in_a_chroot() {
        let dir = scratch("chroot");
        let out = dir.join("image.oci.tar");
        write_archive(&ls_image(), &out).unwrap();
        let listing = smoke_run(&out, &["-ld", "/var/lib/fjord", "/tmp"], &[], "/tmp").unwrap();
        let line = |name: &str| {
            let found = listing.lines().find(|l| l.ends_with(name));
            found
                .unwrap_or_else(|| panic!("no {name} in {listing}"))
                .to_string()
        };
        if is_root() {
            assert!(
                line("/var/lib/fjord").contains(" fjord fjord "),
                "{listing}"
            );
        }
        assert!(line("/tmp").starts_with("drwxrwxrwt"), "{listing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
