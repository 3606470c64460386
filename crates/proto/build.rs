//! Compiles `proto/` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "workload.proto",
        "lanyard/common/v1/types.proto",
        "lanyard/agent/v1/tasks.proto",
        "lanyard/node/v1/node.proto",
        "lanyard/admin/v1/admin.proto",
    ];
    let fds = protox::compile(files, [&root])?;
    for file in &fds.file {
        if let Some(name) = &file.name
            && !name.starts_with("google/")
        {
            println!("cargo:rerun-if-changed={}", root.join(name).display());
        }
    }
    tonic_prost_build::configure().emit_rerun_if_changed(false).compile_fds(fds)?;
    Ok(())
}
