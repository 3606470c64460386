//! The deployment files against the binary they deploy: the configuration
//! files embedded in deploy/kubernetes/ pass `check-config`, every path in
//! them lies on a volume the manifests mount, their ports and probes are the
//! ones the server serves, and deploy/Containerfile starts the binary where
//! the manifests expect it and exposes the same ports.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{COMMAND_TIMEOUT, lanyard, run, success};

/// Prints every YAML document of the files named as arguments as one JSON
/// list of `{"file", "doc"}`. PyYAML's safe loader reads YAML 1.1, as
/// kubectl does.
const YAML_TO_JSON: &str = r#"
import json, os, sys, yaml
docs = []
for name in sys.argv[1:]:
    with open(name) as f:
        docs += [{"file": os.path.basename(name), "doc": d} for d in yaml.safe_load_all(f) if d is not None]
json.dump(docs, sys.stdout, default=str)
"#;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn deploy_files_agree_with_the_binary() {
    let deploy = repo_root().join("deploy");
    let exposed = check_containerfile(&deploy.join("Containerfile"));

    let k8s = deploy.join("kubernetes");
    let files = yaml_files(&k8s);
    let Some(entries) = yaml_docs(&files) else { return };
    for entry in &entries {
        let doc = &entry["doc"];
        assert!(
            doc["apiVersion"].is_string() && doc["kind"].is_string(),
            "{}: a document without kind: {doc}",
            entry["file"]
        );
    }
    let docs: Vec<Value> = entries.iter().map(|e| e["doc"].clone()).collect();

    // kustomization.yaml lists every other file.
    let kustomization = docs.iter().find(|d| d["kind"] == "Kustomization").expect("a kustomization.yaml");
    let listed: BTreeSet<&str> = array_of(&kustomization["resources"], "kustomization resources")
        .iter()
        .map(|r| str_of(r, "resource"))
        .collect();
    let present: BTreeSet<&str> = files
        .iter()
        .map(|f| f.file_name().and_then(|n| n.to_str()).unwrap())
        .filter(|f| *f != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization.yaml resources against the files in deploy/kubernetes");

    let dir = tempfile::tempdir().unwrap();
    let [listen, bundle_listen] = check_server(&docs, dir.path());
    check_agent(&docs, dir.path(), &listen);
    for addr in [&listen, &bundle_listen] {
        assert!(exposed.contains(&port_of(addr)), "the Containerfile does not expose {addr} ({exposed:?})");
    }
}

/// The YAML documents of `files`, as JSON (python3 with PyYAML); `None`
/// (and a SKIPPED line) without PyYAML.
fn yaml_docs(files: &[PathBuf]) -> Option<Vec<Value>> {
    let probe = Command::new("python3").args(["-c", "import yaml"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: the Kubernetes manifests need python3 with PyYAML (pip install pyyaml)");
        return None;
    }
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(YAML_TO_JSON).args(files);
    let json = success("python3 reading YAML", &run(cmd, COMMAND_TIMEOUT));
    Some(serde_json::from_str(&json).unwrap())
}

/// Applies RFC 6902 `add`, `replace` and `remove` operations to `doc`; every
/// path must exist (for `add`, its parent), as kustomize requires.
fn json_patch(doc: &mut Value, ops: &[Value]) {
    for op in ops {
        let path = str_of(&op["path"], "patch path");
        let (parent, last) = path.rsplit_once('/').unwrap_or_else(|| panic!("patch path {path:?}"));
        let target = doc.pointer_mut(parent).unwrap_or_else(|| panic!("the base has no {parent} (patching {path})"));
        match (str_of(&op["op"], "patch op"), target) {
            ("add", Value::Array(items)) if last == "-" => items.push(op["value"].clone()),
            ("add", Value::Object(map)) => {
                map.insert(last.to_owned(), op["value"].clone());
            }
            ("replace", Value::Object(map)) if map.contains_key(last) => {
                map.insert(last.to_owned(), op["value"].clone());
            }
            ("remove", Value::Object(map)) if map.contains_key(last) => {
                map.remove(last);
            }
            (kind, _) => panic!("patch op {kind} at {path}: the base has nothing there"),
        }
    }
}

#[test]
fn the_replicated_variant_patches_what_the_base_has_and_runs_on_postgres() {
    let k8s = repo_root().join("deploy/kubernetes");
    let overlay = k8s.join("replicated");
    let Some(base) = yaml_docs(&yaml_files(&k8s)) else { return };
    let Some(extra) = yaml_docs(&yaml_files(&overlay)) else { return };
    let mut docs: Vec<Value> = base.iter().map(|e| e["doc"].clone()).filter(|d| d["kind"] != "Kustomization").collect();
    let kustomization = extra.iter().map(|e| &e["doc"]).find(|d| d["kind"] == "Kustomization").unwrap();
    let listed: BTreeSet<&str> =
        array_of(&kustomization["resources"], "resources").iter().map(|r| str_of(r, "resource")).collect();
    let mut expected: BTreeSet<&str> =
        extra.iter().map(|e| str_of(&e["file"], "file")).filter(|f| *f != "kustomization.yaml").collect();
    expected.insert("../");
    assert_eq!(listed, expected, "the overlay lists the base and its own files");
    docs.extend(extra.iter().map(|e| e["doc"].clone()).filter(|d| d["kind"] != "Kustomization"));

    // Apply the patch to the base StatefulSet, as kustomize would.
    let patches = array_of(&kustomization["patches"], "patches");
    assert_eq!(patches.len(), 1);
    assert_eq!(
        (&patches[0]["target"]["kind"], &patches[0]["target"]["name"]),
        (&json!("StatefulSet"), &json!("lanyard-server"))
    );
    let dir = tempfile::tempdir().unwrap();
    let patch_file = dir.path().join("patch.yaml");
    std::fs::write(&patch_file, str_of(&patches[0]["patch"], "patch")).unwrap();
    let ops = yaml_docs(&[patch_file]).unwrap();
    let ops = array_of(&ops[0]["doc"], "patch operations");
    let set = docs.iter_mut().find(|d| d["kind"] == "StatefulSet").unwrap();
    json_patch(set, ops);
    assert_eq!(set["spec"]["replicas"], 3);
    assert!(set["spec"]["volumeClaimTemplates"].is_null());
    let pod = &set["spec"]["template"]["spec"];
    let server = container_running(pod, "server");
    let url = env_var(server, "LANYARD_STORE_URL").expect("LANYARD_STORE_URL on the server container");
    let secret = &url["valueFrom"]["secretKeyRef"];
    assert_eq!((&secret["name"], &secret["key"]), (&json!("lanyard-store-url"), &json!("url")));
    let labels = set["spec"]["template"]["metadata"]["labels"].clone();
    let pdb = docs.iter().find(|d| d["kind"] == "PodDisruptionBudget").expect("a PodDisruptionBudget");
    for (key, value) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[key], value, "the PodDisruptionBudget selects the server pods");
    }

    // Everything the base server passes, the patched one passes too (the
    // data directory is still a volume: an emptyDir now).
    check_server(&docs, dir.path());
    // The variable is the one --store-url reads, and check-config names the database.
    let help = success(
        "server run --help",
        &run(
            {
                let mut cmd = lanyard();
                cmd.args(["server", "run", "--help"]);
                cmd
            },
            COMMAND_TIMEOUT,
        ),
    );
    assert!(help.contains("LANYARD_STORE_URL"), "{help}");
    let mut cmd = lanyard();
    cmd.args(["server", "check-config", "--trust-domain", "example.org"])
        .env("LANYARD_STORE_URL", "postgres://lanyard:secret@postgres.db.svc:5432/lanyard");
    let out = success("server check-config with LANYARD_STORE_URL", &run(cmd, COMMAND_TIMEOUT));
    assert!(out.contains("store: PostgreSQL database lanyard on postgres.db.svc:5432 as lanyard"), "{out}");
    assert!(!out.contains("secret"), "check-config printed the password: {out}");
}

/// The Containerfile builds with the workspace's toolchain, starts the binary
/// and exposes the node API and bundle endpoint ports; the ports it exposes.
fn check_containerfile(path: &Path) -> Vec<u16> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.lines().any(|l| l.trim() == r#"ENTRYPOINT ["/usr/local/bin/lanyard"]"#),
        "{}: no ENTRYPOINT [\"/usr/local/bin/lanyard\"]",
        path.display()
    );
    let exposed: Vec<u16> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .map(|p| p.split('/').next().unwrap_or(p).parse().unwrap_or_else(|_| panic!("EXPOSE {p}: not a port")))
        .collect();
    for port in [8081, 8443] {
        assert!(exposed.contains(&port), "{}: port {port} is not exposed (EXPOSE {exposed:?})", path.display());
    }
    let manifest: toml::Table = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap().parse().unwrap();
    let rust = manifest
        .get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get("rust-version"))
        .and_then(toml::Value::as_str)
        .expect("workspace.package.rust-version in Cargo.toml");
    let image = format!("rust:{rust}");
    let pinned = text
        .match_indices(&image)
        .any(|(at, _)| !text[at + image.len()..].starts_with(|c: char| c.is_ascii_digit() || c == '.'));
    assert!(pinned, "{}: the builder is not {image} (the workspace's rust-version)", path.display());
    exposed
}

/// Checks the server's manifests and its embedded configuration; the
/// addresses of its node API and bundle endpoint.
fn check_server(docs: &[Value], tmp: &Path) -> [String; 2] {
    let (config_map, text) = config_file(docs, "lanyard-server.toml");
    let workload = workload_mounting(docs, "StatefulSet", config_map);
    let pod = &workload["spec"]["template"]["spec"];
    let container = container_running(pod, "server");
    check_config_arg(workload, container, config_map, "lanyard-server.toml");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true, "the server's root filesystem");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "the server runs as non-root");
    let config: toml::Table = text.parse().unwrap();

    // The root filesystem is read-only: everything the server reads or
    // writes must be on a volume.
    for key in ["data-dir", "admin-socket", "kek-file", "bundle-tls-cert", "bundle-tls-key", "policy"] {
        if config.contains_key(key) {
            volume_holding(workload, container, toml_str(&config, key));
        }
    }
    // Files are in a mounted directory, not the mount point itself.
    for key in ["admin-socket", "kek-file", "bundle-tls-cert", "bundle-tls-key"] {
        if let Some(path) = config.get(key).and_then(toml::Value::as_str) {
            assert_ne!(
                mount_holding(container, path)["mountPath"],
                path,
                "{key} names a mount point, not a file in it"
            );
        }
    }
    if let Some(var) = env_var(container, "LANYARD_ADMIN_SOCKET") {
        assert_eq!(var["value"], toml_str(&config, "admin-socket"), "LANYARD_ADMIN_SOCKET wins over admin-socket");
    }

    // The Service reaches both listeners; the probes hit the bundle endpoint.
    let listen = toml_str(&config, "listen");
    let bundle_listen = toml_str(&config, "bundle-listen");
    let service_name = str_of(&workload["spec"]["serviceName"], "serviceName");
    let namespace = str_of(&workload["metadata"]["namespace"], "StatefulSet namespace");
    let service = find_service(docs, namespace, service_name, workload);
    let reached: BTreeSet<u16> = array_of(&service["spec"]["ports"], "Service ports")
        .iter()
        .map(|p| container_port(container, if p["targetPort"].is_null() { &p["port"] } else { &p["targetPort"] }))
        .collect();
    for addr in [listen, bundle_listen] {
        assert!(reached.contains(&port_of(addr)), "Service {service_name} does not reach {addr} ({reached:?})");
    }
    let scheme = if config.contains_key("bundle-tls-cert") { "HTTPS" } else { "HTTP" };
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(container_port(container, &get["port"]), port_of(bundle_listen), "{probe} port");
        assert_eq!(get["scheme"].as_str().unwrap_or("HTTP"), scheme, "{probe} scheme");
    }

    // check-config, with the files that exist only in the pod made here.
    let kek = tmp.join("kek");
    std::fs::write(&kek, [7u8; 32]).unwrap();
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["lanyard-server.lanyard.svc".into()]).unwrap().self_signed(&key).unwrap();
    let (cert_path, key_path) = (tmp.join("tls.crt"), tmp.join("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let policies = tmp.join("policies");
    std::fs::create_dir(&policies).unwrap();
    if config.contains_key("policy") {
        let volume = volume_holding(workload, container, toml_str(&config, "policy"));
        let name = str_of(&volume["configMap"]["name"], "the policy volume's ConfigMap");
        let policy_map = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no ConfigMap {name}"));
        let data = policy_map["data"].as_object().unwrap_or_else(|| panic!("ConfigMap {name} has no data"));
        for (file, source) in data.iter().filter(|(file, _)| file.ends_with(".cedar")) {
            std::fs::write(policies.join(file), str_of(source, file)).unwrap();
        }
    }
    let file = tmp.join("lanyard-server.toml");
    std::fs::write(&file, text).unwrap();
    let mut cmd = lanyard();
    cmd.args(["server", "check-config", "--config"]).arg(&file);
    for (key, local) in
        [("kek-file", &kek), ("bundle-tls-cert", &cert_path), ("bundle-tls-key", &key_path), ("policy", &policies)]
    {
        if config.contains_key(key) {
            cmd.arg(format!("--{key}")).arg(local);
        }
    }
    let out =
        success("server check-config of the lanyard-server.toml in deploy/kubernetes", &run(cmd, COMMAND_TIMEOUT));
    let endpoint = format!("bundle endpoint on {}://{bundle_listen}", scheme.to_ascii_lowercase());
    for expected in
        [format!("trust domain {}", toml_str(&config, "trust-domain")), format!("node API on {listen}"), endpoint]
    {
        assert!(out.contains(&expected), "server check-config said {out:?}, not {expected:?}");
    }
    if config.contains_key("kek-file") {
        assert!(out.contains("sealed with the KEK"), "{out}");
    }
    [listen.to_owned(), bundle_listen.to_owned()]
}

/// Checks the agent's manifests and its embedded configuration: among them,
/// that it names the server's Service at the port reaching `server_listen`.
fn check_agent(docs: &[Value], tmp: &Path, server_listen: &str) {
    let (config_map, text) = config_file(docs, "lanyard-agent.toml");
    let workload = workload_mounting(docs, "DaemonSet", config_map);
    let pod = &workload["spec"]["template"]["spec"];
    let container = container_running(pod, "agent");
    check_config_arg(workload, container, config_map, "lanyard-agent.toml");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true, "the agent's root filesystem");
    // SO_PEERCRED pids are those of the agent's PID namespace: the host's.
    assert_eq!(pod["hostPID"], true, "the agent DaemonSet needs hostPID");
    let config: toml::Table = text.parse().unwrap();

    // The socket's directory and the data directory are host directories at
    // the same paths as in the container, where workloads (and the systemd
    // unit) find them; the trust bundle is a file on a volume.
    let socket = toml_str(&config, "socket");
    let socket = socket.strip_prefix("unix://").unwrap_or(socket);
    for path in [socket, toml_str(&config, "data-dir")] {
        let volume = volume_holding(workload, container, path);
        let mount_path = &mount_holding(container, path)["mountPath"];
        assert_eq!(&volume["hostPath"]["path"], mount_path, "{path} is not on the host at {mount_path}: {volume}");
    }
    assert_ne!(
        mount_holding(container, socket)["mountPath"],
        socket,
        "the socket's directory is mounted, not the socket"
    );
    if let Some(bundle) = config.get("trust-bundle").and_then(toml::Value::as_str) {
        assert_ne!(mount_holding(container, bundle)["mountPath"], bundle, "trust-bundle names a mount point");
        volume_holding(workload, container, bundle);
    }
    // An endpoint variable would override `socket`; the token comes from a Secret.
    assert!(env_var(container, "SPIFFE_ENDPOINT_SOCKET").is_none(), "SPIFFE_ENDPOINT_SOCKET overrides socket");
    let token = env_var(container, "LANYARD_JOIN_TOKEN").expect("LANYARD_JOIN_TOKEN in the agent's env");
    assert!(token["valueFrom"]["secretKeyRef"]["name"].is_string(), "the join token from a Secret: {token}");

    // Every server is the server's Service, at the port that reaches its node API.
    let servers: Vec<&str> = config
        .get("server")
        .and_then(toml::Value::as_array)
        .expect("a server list in lanyard-agent.toml")
        .iter()
        .map(|s| s.as_str().expect("server entries are strings"))
        .collect();
    let server_workload = workload_mounting(docs, "StatefulSet", config_file(docs, "lanyard-server.toml").0);
    let server_container = container_running(&server_workload["spec"]["template"]["spec"], "server");
    for server in &servers {
        let (host, port) = server.rsplit_once(':').unwrap_or_else(|| panic!("server {server:?} has no port"));
        let labels: Vec<&str> = host.split('.').collect();
        assert!(labels.len() >= 3 && labels[2] == "svc", "server {server:?} is not SERVICE.NAMESPACE.svc:PORT");
        let service = find_service(docs, labels[1], labels[0], server_workload);
        let port: u16 = port.parse().unwrap();
        let target = array_of(&service["spec"]["ports"], "Service ports")
            .iter()
            .find(|p| p["port"] == port)
            .unwrap_or_else(|| panic!("Service {host} has no port {port}"));
        let target = if target["targetPort"].is_null() { &target["port"] } else { &target["targetPort"] };
        assert_eq!(container_port(server_container, target), port_of(server_listen), "{server} reaches the node API");
    }

    // check-config, with a trust bundle made here.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let bundle = tmp.join("ca.pem");
    std::fs::write(&bundle, params.self_signed(&key).unwrap().pem()).unwrap();
    let file = tmp.join("lanyard-agent.toml");
    std::fs::write(&file, text).unwrap();
    let mut cmd = lanyard();
    cmd.args(["agent", "check-config", "--config"]).arg(&file);
    if config.contains_key("trust-bundle") {
        cmd.arg("--trust-bundle").arg(&bundle);
    }
    let out = success("agent check-config of the lanyard-agent.toml in deploy/kubernetes", &run(cmd, COMMAND_TIMEOUT));
    for expected in [format!("servers {}", servers.join(", ")), format!("socket {socket}")] {
        assert!(out.contains(&expected), "agent check-config said {out:?}, not {expected:?}");
    }
}

/// The `*.yaml` files of `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML in {}", dir.display());
    files
}

/// The one ConfigMap holding `key`: its name and that file's text.
fn config_file<'a>(docs: &'a [Value], key: &str) -> (&'a str, &'a str) {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "ConfigMap" && d["data"][key].is_string()).collect();
    assert_eq!(found.len(), 1, "exactly one ConfigMap should hold {key}");
    (str_of(&found[0]["metadata"]["name"], "ConfigMap name"), str_of(&found[0]["data"][key], key))
}

/// The `kind` workload whose pod mounts ConfigMap `config_map`.
fn workload_mounting<'a>(docs: &'a [Value], kind: &str, config_map: &str) -> &'a Value {
    docs.iter()
        .filter(|d| d["kind"] == kind)
        .find(|d| volumes(&d["spec"]["template"]["spec"]).iter().any(|v| v["configMap"]["name"] == config_map))
        .unwrap_or_else(|| panic!("no {kind} mounts ConfigMap {config_map}"))
}

/// The container of `pod` whose arguments begin `ROLE run`.
fn container_running<'a>(pod: &'a Value, role: &str) -> &'a Value {
    array_of(&pod["containers"], "containers")
        .iter()
        .find(|c| c["args"][0] == role && c["args"][1] == "run")
        .unwrap_or_else(|| panic!("no container runs `lanyard {role} run`"))
}

/// `--config FILE` in the container's arguments names `file_name` of ConfigMap `config_map`.
fn check_config_arg(workload: &Value, container: &Value, config_map: &str, file_name: &str) {
    let args: Vec<&str> = array_of(&container["args"], "args").iter().map(|a| str_of(a, "argument")).collect();
    let path = args.windows(2).find(|w| w[0] == "--config").map(|w| w[1]).expect("--config FILE in the arguments");
    assert!(path.ends_with(&format!("/{file_name}")), "--config {path} is not {file_name}");
    let volume = volume_holding(workload, container, path);
    assert_eq!(volume["configMap"]["name"], config_map, "--config {path} is not on ConfigMap {config_map}");
}

/// The container's mount that `path` lies on (the innermost).
fn mount_holding<'a>(container: &'a Value, path: &str) -> &'a Value {
    let under = |mount: &str| path == mount || path.starts_with(&format!("{}/", mount.trim_end_matches('/')));
    array_of(&container["volumeMounts"], "volumeMounts")
        .iter()
        .filter(|m| m["mountPath"].as_str().is_some_and(under))
        .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len))
        .unwrap_or_else(|| panic!("{path} is on no volume mount of container {}", container["name"]))
}

/// The volume of the container's mount that `path` lies on: one of the
/// pod's volumes or of the workload's volume claim templates.
fn volume_holding<'a>(workload: &'a Value, container: &Value, path: &str) -> &'a Value {
    let mount = mount_holding(container, path);
    let claims = workload["spec"]["volumeClaimTemplates"].as_array().map(Vec::as_slice).unwrap_or_default();
    volumes(&workload["spec"]["template"]["spec"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .or_else(|| claims.iter().find(|c| c["metadata"]["name"] == mount["name"]))
        .unwrap_or_else(|| panic!("mount {} names no volume of the pod", mount["name"]))
}

/// The Service `name` in `namespace`, which must select `workload`'s pods.
fn find_service<'a>(docs: &'a [Value], namespace: &str, name: &str, workload: &Value) -> &'a Value {
    let service = docs
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == name && d["metadata"]["namespace"] == namespace)
        .unwrap_or_else(|| panic!("no Service {name} in namespace {namespace}"));
    let labels = &workload["spec"]["template"]["metadata"]["labels"];
    let selector = service["spec"]["selector"].as_object().unwrap_or_else(|| panic!("Service {name} has no selector"));
    for (key, value) in selector {
        assert_eq!(
            &labels[key.as_str()],
            value,
            "Service {name} selects {key}={value}; the pods are labelled {labels}"
        );
    }
    service
}

/// The container port that `port` (a number or a port name) refers to.
fn container_port(container: &Value, port: &Value) -> u16 {
    let number = match port.as_str() {
        Some(name) => &array_of(&container["ports"], "ports")
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("container {} has no port named {name}", container["name"]))["containerPort"],
        None => port,
    };
    number.as_u64().and_then(|n| u16::try_from(n).ok()).unwrap_or_else(|| panic!("{port} is not a port"))
}

/// The port of `host:port`.
fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).unwrap_or_else(|| panic!("{addr:?} has no port"))
}

/// The container's environment variable `name`, if set.
fn env_var<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"].as_array()?.iter().find(|e| e["name"] == name)
}

fn volumes(pod: &Value) -> &[Value] {
    pod["volumes"].as_array().map(Vec::as_slice).unwrap_or_default()
}

fn array_of<'a>(value: &'a Value, what: &str) -> &'a [Value] {
    value.as_array().unwrap_or_else(|| panic!("{what}: expected a list, found {value}"))
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value.as_str().unwrap_or_else(|| panic!("{what}: expected a string, found {value}"))
}

fn toml_str<'a>(table: &'a toml::Table, key: &str) -> &'a str {
    table.get(key).and_then(toml::Value::as_str).unwrap_or_else(|| panic!("no string `{key}` in the configuration"))
}
