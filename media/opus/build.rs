//! Compiles the vendored libopus 1.6.1 (libopus/) with the `cc` crate alone: no cmake, no
//! pkg-config, no system libopus. The file lists are libopus's own (`*_sources.mk`), so the build
//! follows upstream's choice of files; the defines mirror its CMake float build.
//!
//! x86_64: SSE/SSE2 are part of the baseline ABI, so they are presumed; SSE4.1 and AVX2 kernels
//! are compiled with their own flags and chosen at run time by libopus's CPU detection (RTCD),
//! as a distribution's libopus does. Elsewhere (aarch64 included): the portable C.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Sources that a 48 kHz mono encoder/decoder never reaches: the multistream and ambisonics
/// (projection) APIs. Left out of the vendored tree and of the build.
const NOT_VENDORED: &[&str] = &[
    "src/opus_multistream.c",
    "src/opus_multistream_encoder.c",
    "src/opus_multistream_decoder.c",
    "src/opus_projection_encoder.c",
    "src/opus_projection_decoder.c",
    "src/mapping_matrix.c",
];

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("libopus");
    println!("cargo:rerun-if-changed=libopus");
    println!("cargo:rerun-if-changed=build.rs");

    let mut lists = HashMap::new();
    for mk in ["celt_sources.mk", "silk_sources.mk", "opus_sources.mk"] {
        lists.extend(parse_sources_mk(&root.join(mk)));
    }
    let files = |names: &[&str]| -> Vec<PathBuf> {
        names
            .iter()
            .flat_map(|n| lists.get(*n).unwrap_or_else(|| panic!("{n} missing from libopus's *_sources.mk")))
            .filter(|f| !NOT_VENDORED.contains(&f.as_str()))
            .map(|f| root.join(f))
            .collect()
    };

    let x86_64 = std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64");
    let base = || {
        let mut b = cc::Build::new();
        b.include(root.join("include"))
            .include(&root)
            .include(root.join("celt"))
            .include(root.join("silk"))
            .include(root.join("silk/float"))
            .define("OPUS_BUILD", None)
            .define("USE_ALLOCA", None)
            .define("HAVE_LRINT", None)
            .define("HAVE_LRINTF", None)
            .define("PACKAGE_VERSION", Some(format!("\"{}\"", version(&root)).as_str()))
            .warnings(false)
            .opt_level(3);
        if x86_64 {
            for d in [
                "OPUS_X86_MAY_HAVE_SSE",
                "OPUS_X86_PRESUME_SSE",
                "OPUS_X86_MAY_HAVE_SSE2",
                "OPUS_X86_PRESUME_SSE2",
                "OPUS_X86_MAY_HAVE_SSE4_1",
                "OPUS_X86_MAY_HAVE_AVX2",
                "OPUS_HAVE_RTCD",
                "CPU_INFO_BY_ASM",
            ] {
                b.define(d, None);
            }
        }
        b
    };

    let mut lib = base();
    lib.files(files(&["CELT_SOURCES", "SILK_SOURCES", "SILK_SOURCES_FLOAT", "OPUS_SOURCES", "OPUS_SOURCES_FLOAT"]));
    if x86_64 {
        lib.files(files(&["CELT_SOURCES_SSE", "CELT_SOURCES_SSE2", "CELT_SOURCES_X86_RTCD", "SILK_SOURCES_X86_RTCD"]));
        // Kernels built for newer instruction sets: only called after the CPU check says so.
        let sse41 = base().flag("-msse4.1").files(files(&["CELT_SOURCES_SSE4_1", "SILK_SOURCES_SSE4_1"])).compile_intermediates();
        let avx2 = base()
            .flag("-mavx")
            .flag("-mfma")
            .flag("-mavx2")
            .files(files(&["CELT_SOURCES_AVX2", "SILK_SOURCES_AVX2", "SILK_SOURCES_FLOAT_AVX2"]))
            .compile_intermediates();
        lib.objects(sse41).objects(avx2);
    }
    lib.compile("opus");
    println!("cargo:include={}", root.join("include").display());
}

/// `NAME = a.c b.c \` lines (with continuations) from an automake source list.
fn parse_sources_mk(path: &Path) -> HashMap<String, Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).replace("\\\n", " ");
    text.lines()
        .filter_map(|line| {
            let (name, files) = line.split_once('=')?;
            let name = name.trim();
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .then(|| (name.to_string(), files.split_whitespace().map(str::to_string).collect()))
        })
        .collect()
}

/// `PACKAGE_VERSION="1.6.1"` from libopus's `package_version` file.
fn version(root: &Path) -> String {
    let text = std::fs::read_to_string(root.join("package_version")).expect("libopus/package_version");
    text.trim().trim_start_matches("PACKAGE_VERSION=").trim_matches('"').to_string()
}
