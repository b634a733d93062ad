//! The agent image, assembled in process: a `docker load` archive holding one layer with the
//! static `flotilla` binary at `/flotilla`, entrypoint `/flotilla`, `FROM scratch`.
//!
//! The archive is Docker's own `docker save` layout (`manifest.json`, `<id>.json`,
//! `<layer>/layer.tar`), which every engine since 1.10 loads. Every tar header carries mtime 0,
//! uid/gid 0 and fixed modes, so the same binary always gives the same image id: a host that
//! already has the tag needs nothing, and a changed binary is a new tag.
//!
//! The binary is never held in memory: [`AgentImage::prepare`] hashes it in one pass (the
//! binary's digest names the tag, the layer's digest goes into the config), and
//! [`AgentImage::reader`] streams the archive as in-memory headers chained around the file.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use tokio::io::AsyncRead;

/// Where the agent binary comes from when set; otherwise the running CLI's own binary.
pub const BINARY_ENV: &str = "FLOTILLA_AGENT_BINARY";
/// The image's repository name on hosts.
pub const REPOSITORY: &str = "flotilla";
/// Path of the binary inside the image (and its entrypoint).
pub const IN_IMAGE_PATH: &str = "flotilla";

const BLOCK: u64 = 512;

/// Why the agent image cannot be made from a binary.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("read the agent binary {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an ELF executable, so it cannot be the agents' binary")]
    NotElf { path: PathBuf },
    #[error(
        "{path} is dynamically linked (it names a program interpreter), so it cannot run in a \
         FROM scratch image"
    )]
    Dynamic { path: PathBuf },
}

impl ImageError {
    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ImageError::Dynamic { .. } | ImageError::NotElf { .. } => {
                "build a static flotilla (RUSTFLAGS='-C target-feature=+crt-static' cargo build \
                 -p flotilla --target x86_64-unknown-linux-gnu) and run that, or point \
                 FLOTILLA_AGENT_BINARY at it"
            }
            ImageError::Read { .. } => "check the path and its permissions",
        }
    }
}

/// The agent image for one binary: its tag, digests and the archive's layout.
#[derive(Clone, Debug)]
pub struct AgentImage {
    /// `flotilla:<crate version>-<first 12 hex of the binary's sha256>`.
    pub tag: String,
    /// `sha256:<hex>` of the config JSON: the image id `docker image inspect` reports.
    pub id: String,
    binary: PathBuf,
    binary_len: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl AgentImage {
    /// The binary setup ships: `FLOTILLA_AGENT_BINARY`, else the running executable (by its
    /// real path, so an error names the file the user ran).
    pub fn default_binary() -> PathBuf {
        std::env::var_os(BINARY_ENV)
            .map(PathBuf::from)
            .or_else(|| std::fs::read_link("/proc/self/exe").ok())
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
    }

    /// Checks that `binary` is a static ELF, hashes it and lays out the archive.
    pub fn prepare(binary: &Path, version: &str) -> Result<AgentImage, ImageError> {
        let read_err = |source| ImageError::Read {
            path: binary.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(binary).map_err(read_err)?;
        let mut start = vec![0u8; 64 * 1024];
        let n = read_full(&mut file, &mut start).map_err(read_err)?;
        start.truncate(n);
        check_static(&start, binary)?;

        // One pass: the binary's own digest and the layer tar's digest.
        let binary_len = std::fs::metadata(binary).map_err(read_err)?.len();
        let layer_header = tar_header(IN_IMAGE_PATH, binary_len, 0o755);
        let mut layer = Sha256::new();
        let mut bin = Sha256::new();
        layer.update(layer_header);
        let mut file = std::fs::File::open(binary).map_err(read_err)?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut seen = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            layer.update(&buf[..n]);
            bin.update(&buf[..n]);
            seen += n as u64;
        }
        if seen != binary_len {
            return Err(read_err(std::io::Error::other(
                "the file changed size while being read",
            )));
        }
        let layer_tail = layer_tail(binary_len);
        layer.update(&layer_tail);
        let layer_hex = hex::encode(layer.finalize());
        let bin_hex = hex::encode(bin.finalize());
        let tag = format!("{REPOSITORY}:{version}-{}", &bin_hex[..12]);

        let config = config_json(&layer_hex, &tag);
        let config_hex = hex::encode(Sha256::digest(&config));
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": format!("{config_hex}.json"),
            "RepoTags": [tag],
            "Layers": [format!("{layer_hex}/layer.tar")],
        }]))
        .unwrap_or_default();

        // Outer archive: config, manifest, then the layer whose body is the file.
        let mut head = Vec::new();
        push_entry(&mut head, &format!("{config_hex}.json"), &config);
        push_entry(&mut head, "manifest.json", &manifest);
        let layer_len = layer_header.len() as u64 + binary_len + layer_tail.len() as u64;
        head.extend_from_slice(&tar_header(
            &format!("{layer_hex}/layer.tar"),
            layer_len,
            0o644,
        ));
        head.extend_from_slice(&layer_header);
        let mut tail = layer_tail;
        tail.resize(tail.len() + padding(layer_len) as usize, 0);
        tail.resize(tail.len() + 2 * BLOCK as usize, 0);

        Ok(AgentImage {
            tag,
            id: format!("sha256:{config_hex}"),
            binary: binary.to_owned(),
            binary_len,
            head,
            tail,
        })
    }

    /// Size of the whole archive in bytes.
    pub fn archive_len(&self) -> u64 {
        self.head.len() as u64 + self.binary_len + self.tail.len() as u64
    }

    /// The archive as a stream: headers from memory, the binary from its file.
    pub async fn reader(&self) -> Result<impl AsyncRead + Unpin + Send + use<>, ImageError> {
        use tokio::io::AsyncReadExt;
        let file = tokio::fs::File::open(&self.binary)
            .await
            .map_err(|source| ImageError::Read {
                path: self.binary.clone(),
                source,
            })?;
        let head = std::io::Cursor::new(self.head.clone());
        let tail = std::io::Cursor::new(self.tail.clone());
        Ok(AsyncReadExt::chain(
            AsyncReadExt::chain(head, file.take(self.binary_len)),
            tail,
        ))
    }

    /// The whole archive in memory (tests and small binaries).
    pub fn to_vec(&self) -> Result<Vec<u8>, ImageError> {
        let mut out = self.head.clone();
        let mut file = std::fs::File::open(&self.binary).map_err(|source| ImageError::Read {
            path: self.binary.clone(),
            source,
        })?;
        file.by_ref()
            .take(self.binary_len)
            .read_to_end(&mut out)
            .map_err(|source| ImageError::Read {
                path: self.binary.clone(),
                source,
            })?;
        out.extend_from_slice(&self.tail);
        Ok(out)
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Refuses anything but an ELF without a `PT_INTERP` program header (a dynamic executable
/// needs its loader and libc, which a `FROM scratch` image does not have).
fn check_static(start: &[u8], path: &Path) -> Result<(), ImageError> {
    const PT_INTERP: u32 = 3;
    let not_elf = || ImageError::NotElf {
        path: path.to_owned(),
    };
    // 64-bit little-endian ELF only: the agents run on x86_64 and aarch64 Linux.
    if start.len() < 64 || &start[..4] != b"\x7fELF" || start[4] != 2 || start[5] != 1 {
        return Err(not_elf());
    }
    let u16_at = |o: usize| u16::from_le_bytes([start[o], start[o + 1]]);
    let phoff = u64::from_le_bytes(start[0x20..0x28].try_into().map_err(|_| not_elf())?);
    let phentsize = u16_at(0x36) as u64;
    let phnum = u16_at(0x38) as u64;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let Some(bytes) = start.get(at as usize..at as usize + 4) else {
            return Err(not_elf());
        };
        if u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == PT_INTERP {
            return Err(ImageError::Dynamic {
                path: path.to_owned(),
            });
        }
    }
    Ok(())
}

/// The image config: entrypoint, one layer, no environment, no history dates.
fn config_json(layer_hex: &str, tag: &str) -> Vec<u8> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Entrypoint": [format!("/{IN_IMAGE_PATH}")],
            "Labels": {"flotilla.image": tag},
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_hex}")]},
        "history": [{"created_by": "flotilla setup (the CLI's own binary)"}],
    }))
    .unwrap_or_default()
}

fn padding(len: u64) -> u64 {
    (BLOCK - len % BLOCK) % BLOCK
}

/// What follows the binary inside the layer tar: padding and the end-of-archive blocks.
fn layer_tail(binary_len: u64) -> Vec<u8> {
    vec![0u8; (padding(binary_len) + 2 * BLOCK) as usize]
}

fn push_entry(out: &mut Vec<u8>, name: &str, body: &[u8]) {
    out.extend_from_slice(&tar_header(name, body.len() as u64, 0o644));
    out.extend_from_slice(body);
    out.resize(out.len() + padding(body.len() as u64) as usize, 0);
}

/// A ustar header for a regular file owned by root, mtime 0. Names here are at most 76
/// bytes (a 64-hex digest plus `/layer.tar`), inside ustar's 100.
fn tar_header(name: &str, size: u64, mode: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    let field = |h: &mut [u8; 512], at: usize, len: usize, s: &str| {
        let b = s.as_bytes();
        let n = b.len().min(len);
        h[at..at + n].copy_from_slice(&b[..n]);
    };
    field(&mut h, 0, 100, name);
    field(&mut h, 100, 8, &format!("{mode:07o}"));
    field(&mut h, 108, 8, "0000000");
    field(&mut h, 116, 8, "0000000");
    field(&mut h, 124, 12, &format!("{size:011o}"));
    field(&mut h, 136, 12, "00000000000");
    h[148..156].copy_from_slice(b"        ");
    h[156] = b'0';
    field(&mut h, 257, 6, "ustar");
    field(&mut h, 263, 2, "00");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    field(&mut h, 148, 8, &format!("{sum:06o}\0 "));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header with `phnum` program headers, the first of type `first`.
    fn elf(first: u32) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        b[64..68].copy_from_slice(&first.to_le_bytes());
        b[120..124].copy_from_slice(&1u32.to_le_bytes());
        b
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Entries of a tar as (name, body), checking each header's checksum.
    fn entries(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 512 <= tar.len() && tar[at..at + 512].iter().any(|&b| b != 0) {
            let h = &tar[at..at + 512];
            let name =
                String::from_utf8(h[..100].split(|&b| b == 0).next().unwrap().to_vec()).unwrap();
            let size = u64::from_str_radix(
                std::str::from_utf8(&h[124..135])
                    .unwrap()
                    .trim_matches('\0'),
                8,
            )
            .unwrap() as usize;
            let stored = u32::from_str_radix(
                std::str::from_utf8(&h[148..154])
                    .unwrap()
                    .trim_matches('\0'),
                8,
            )
            .unwrap();
            let mut copy = h.to_vec();
            copy[148..156].copy_from_slice(b"        ");
            assert_eq!(
                stored,
                copy.iter().map(|&b| b as u32).sum::<u32>(),
                "{name}"
            );
            out.push((name, tar[at + 512..at + 512 + size].to_vec()));
            at += 512 + size + padding(size as u64) as usize;
        }
        assert_eq!(at + 1024, tar.len(), "two zero blocks end the archive");
        out
    }

    /// The archive `docker load` reads: the manifest names the config by its digest and
    /// the layer whose digest the config lists, the layer holds the binary at /flotilla,
    /// and the tag carries the version and the binary's digest.
    #[test]
    fn archive_is_docker_save_layout_with_correct_digests() {
        let dir = tempfile::tempdir().unwrap();
        let bin = elf(1);
        let path = write(dir.path(), "flotilla", &bin);
        let image = AgentImage::prepare(&path, "0.1.0").unwrap();
        let tar = image.to_vec().unwrap();
        assert_eq!(tar.len() as u64, image.archive_len());
        let e = entries(&tar);
        let manifest: serde_json::Value =
            serde_json::from_slice(&e.iter().find(|(n, _)| n == "manifest.json").unwrap().1)
                .unwrap();
        let config_name = manifest[0]["Config"].as_str().unwrap();
        let config_body = &e.iter().find(|(n, _)| n == config_name).unwrap().1;
        assert_eq!(
            format!("{}.json", hex::encode(Sha256::digest(config_body))),
            config_name
        );
        assert_eq!(image.id, format!("sha256:{}", &config_name[..64]));
        let config: serde_json::Value = serde_json::from_slice(config_body).unwrap();
        assert_eq!(config["config"]["Entrypoint"][0], "/flotilla");
        let layer_name = manifest[0]["Layers"][0].as_str().unwrap();
        let layer = &e.iter().find(|(n, _)| n == layer_name).unwrap().1;
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", hex::encode(Sha256::digest(layer)))
        );
        let inner = entries(layer);
        assert_eq!(inner, vec![("flotilla".to_owned(), bin.clone())]);
        let bin_hex = hex::encode(Sha256::digest(&bin));
        assert_eq!(image.tag, format!("flotilla:0.1.0-{}", &bin_hex[..12]));
        assert_eq!(manifest[0]["RepoTags"][0], image.tag);
    }

    /// The same binary always gives the same image (a host that has it loads nothing);
    /// one changed byte gives a new tag.
    #[test]
    fn same_binary_same_image_changed_binary_new_tag() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a", &elf(1));
        let b = write(dir.path(), "b", &elf(1));
        let mut changed = elf(1);
        changed[4000] = 7;
        let c = write(dir.path(), "c", &changed);
        let (ia, ib, ic) = (
            AgentImage::prepare(&a, "0.1.0").unwrap(),
            AgentImage::prepare(&b, "0.1.0").unwrap(),
            AgentImage::prepare(&c, "0.1.0").unwrap(),
        );
        assert_eq!(
            (ia.tag.as_str(), ia.id.as_str()),
            (ib.tag.as_str(), ib.id.as_str())
        );
        assert_eq!(ia.to_vec().unwrap(), ib.to_vec().unwrap());
        assert_ne!(ia.tag, ic.tag);
    }

    /// A dynamically linked binary is refused with what to do; so is a non-ELF file.
    #[test]
    fn dynamic_or_non_elf_binary_is_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let dynamic = write(dir.path(), "dyn", &elf(3));
        let err = AgentImage::prepare(&dynamic, "0.1.0").unwrap_err();
        assert!(matches!(err, ImageError::Dynamic { .. }), "{err}");
        assert!(err.hint().contains("crt-static"));
        let script = write(dir.path(), "sh", b"#!/bin/sh\necho hi\n");
        assert!(matches!(
            AgentImage::prepare(&script, "0.1.0").unwrap_err(),
            ImageError::NotElf { .. }
        ));
    }

    /// The streamed archive is byte for byte the one whose digests were computed.
    #[tokio::test]
    async fn streamed_archive_equals_the_computed_one() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let mut big = elf(1);
        big.resize(700_001, 9);
        let path = write(dir.path(), "flotilla", &big);
        let image = AgentImage::prepare(&path, "0.1.0").unwrap();
        let mut streamed = Vec::new();
        image
            .reader()
            .await
            .unwrap()
            .read_to_end(&mut streamed)
            .await
            .unwrap();
        assert_eq!(streamed, image.to_vec().unwrap());
    }
}
