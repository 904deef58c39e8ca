//! The deployment files in `examples/`, parsed and then executed the way
//! their orchestrator would: Compose services, a Kubernetes Job and
//! Deployment, a GitHub Actions step; the Dockerfile's structure; and the
//! README's excerpts of them.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

use crate::cluster::{Cluster, TestDb};
use crate::harness::{two_migrations, wait_until, Miglock, RunOutput, SETTLE};
use crate::probes::sessions_like;

use super::entrypoint::{entrypoint, App};
use super::{example_migration_versions, example_migrations, read_repo_file, repo_path, MIGLOCK};

#[track_caller]
fn load_yaml(relative: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read_repo_file(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"));
    assert_eq!(docs.len(), 1, "{relative}: one document");
    docs.remove(0)
}

#[track_caller]
fn as_str<'y>(value: &'y Yaml, what: &str) -> &'y str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {value:?}"))
}

#[track_caller]
fn as_vec<'y>(value: &'y Yaml, what: &str) -> &'y [Yaml] {
    value
        .as_vec()
        .unwrap_or_else(|| panic!("{what}: expected a list, got {value:?}"))
}

#[track_caller]
fn strings(value: &Yaml, what: &str) -> Vec<String> {
    as_vec(value, what)
        .iter()
        .map(|item| as_str(item, what).to_string())
        .collect()
}

/// A Compose `environment:` mapping. Values must be strings or numbers:
/// Compose rejects a YAML boolean (`RUN_MIGRATIONS: no` would be one in
/// YAML 1.1 parsers), so a quoted string is the only safe spelling.
#[track_caller]
fn compose_env(service: &Yaml, what: &str) -> BTreeMap<String, String> {
    let env = service["environment"]
        .as_hash()
        .unwrap_or_else(|| panic!("{what}: environment must be a mapping"));
    env.iter()
        .map(|(key, value)| {
            let value = match value {
                Yaml::String(s) => s.clone(),
                Yaml::Integer(i) => i.to_string(),
                other => panic!("{what}: {key:?} must be a string, got {other:?}"),
            };
            (as_str(key, what).to_string(), value)
        })
        .collect()
}

/// A Kubernetes container's `env:` list; entries with `valueFrom` map to None.
#[track_caller]
fn k8s_env(container: &Yaml, what: &str) -> BTreeMap<String, Option<String>> {
    as_vec(&container["env"], what)
        .iter()
        .map(|entry| {
            let name = as_str(&entry["name"], what).to_string();
            let value = entry["value"].as_str().map(str::to_string);
            assert!(
                value.is_some() || !entry["valueFrom"].is_badvalue(),
                "{what}: {name} has neither value nor valueFrom"
            );
            (name, value)
        })
        .collect()
}

#[test]
fn compose_file_has_the_three_services_on_a_healthy_database() {
    let compose = load_yaml("examples/docker-compose.yml");
    let services = &compose["services"];
    let db = &services["db"];
    assert!(as_str(&db["image"], "db.image").starts_with("postgres:15"));
    let health = strings(&db["healthcheck"]["test"], "db.healthcheck.test");
    assert_eq!(health[0], "CMD-SHELL");
    assert!(health[1].contains("pg_isready"), "{health:?}");

    let expected = [
        ("api", "1", None),
        ("worker", "0", Some("1")),
        ("calls", "0", Some("1")),
    ];
    for (name, run_migrations, wait_when_disabled) in expected {
        let service = &services[name];
        let env = compose_env(service, name);
        assert_eq!(env["RUN_MIGRATIONS"], run_migrations, "{name}");
        assert_eq!(
            env.get("MIGLOCK_WAIT_WHEN_DISABLED").map(String::as_str),
            wait_when_disabled,
            "{name}"
        );
        assert!(env.contains_key("DATABASE_URL"), "{name}");
        assert_eq!(
            as_str(&service["depends_on"]["db"]["condition"], name),
            "service_healthy",
            "{name}: starts only once the database is up"
        );
        // The build context is relative to the compose file's folder.
        let context = repo_path("examples").join(as_str(&service["build"]["context"], name));
        let dockerfile = as_str(&service["build"]["dockerfile"], name);
        assert!(
            context.join(dockerfile).is_file(),
            "{name}: {dockerfile} not found in context {}",
            context.display()
        );
        assert!(!strings(&service["command"], name).is_empty(), "{name}");
    }
    assert_eq!(
        services.as_hash().unwrap().len(),
        4,
        "db, api, worker and calls"
    );
}

/// Runs the entrypoint the way a Compose service would: its environment
/// from the file, only the database and the migrations folder swapped for
/// the test's, and the test app as its command.
fn compose_service(compose: &Yaml, name: &str, db: &TestDb, app: &App) -> Miglock {
    let mut m = entrypoint(db, &example_migrations());
    for (key, value) in compose_env(&compose["services"][name], name) {
        if key != "DATABASE_URL" {
            m.env(key, value);
        }
    }
    app.command(&mut m);
    m
}

#[test]
fn compose_services_migrate_once_and_start_in_order_against_a_real_database() {
    let compose = load_yaml("examples/docker-compose.yml");
    let db = Cluster::shared().create_db();
    // worker and calls come up first, and must wait for api's migrations.
    let waiters: Vec<_> = ["worker", "calls"]
        .into_iter()
        .map(|name| {
            let app = App::new();
            let child = compose_service(&compose, name, &db, &app).spawn();
            (name, app, child)
        })
        .collect();
    wait_until(SETTLE, || sessions_like(&db, "miglock wait %") == 2);
    assert!(waiters.iter().all(|(_, app, _)| !app.started()));
    // Two api replicas at once (`--scale api=2`): exactly one migrates.
    let api: Vec<_> = (0..2)
        .map(|_| {
            let app = App::new();
            let child = compose_service(&compose, "api", &db, &app).spawn();
            (app, child)
        })
        .collect();
    let mut migrated = 0;
    for (app, child) in api {
        let pid = child.id();
        let out = RunOutput::from_child(child);
        out.assert_success()
            .assert_stderr_contains("miglock-entrypoint: apply exited 0");
        app.assert_started(&out, pid);
        migrated += usize::from(out.stderr.contains("MIGRATION_APPLIED"));
    }
    assert_eq!(migrated, 1, "exactly one api replica migrates");
    for (name, app, child) in waiters {
        let pid = child.id();
        let out = RunOutput::from_child(child);
        out.assert_success()
            .assert_stderr_contains("MIGLOCK_WAIT_WHEN_DISABLED=1: waiting for the schema")
            .assert_stderr_contains("miglock-entrypoint: wait exited 0");
        assert!(!out.stderr.contains("MIGRATION_APPLIED"), "{name}");
        app.assert_started(&out, pid);
    }
    assert_eq!(db.history(), example_migration_versions());
}

/// A container's `command` + `args`, with `miglock` swapped for the binary
/// under test.
#[track_caller]
fn miglock_invocation(container: &Yaml, what: &str) -> Vec<String> {
    let mut argv = strings(&container["command"], what);
    argv.extend(strings(&container["args"], what));
    assert_eq!(argv[0], "miglock", "{what}: runs miglock itself");
    argv.remove(0);
    argv
}

#[test]
fn kubernetes_job_applies_once_and_the_deployment_waits_for_it() {
    let job = load_yaml("examples/kubernetes/migrate-job.yaml");
    let deployment = load_yaml("examples/kubernetes/deployment.yaml");
    let uid = dockerfile_uid();

    assert_eq!(as_str(&job["apiVersion"], "job"), "batch/v1");
    assert_eq!(as_str(&job["kind"], "job"), "Job");
    let spec = &job["spec"];
    for field in [
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ] {
        assert!(
            spec[field].as_i64().is_some_and(|n| n > 0),
            "job.spec.{field}"
        );
    }
    let pod = &spec["template"]["spec"];
    assert_eq!(as_str(&pod["restartPolicy"], "job"), "Never");
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod["securityContext"]["runAsUser"].as_i64(), Some(uid));
    let containers = as_vec(&pod["containers"], "job containers");
    assert_eq!(containers.len(), 1);
    let migrate = &containers[0];
    let job_argv = miglock_invocation(migrate, "job");
    assert_eq!(job_argv[0], "apply");
    let secret = as_str(&migrate["envFrom"][0]["secretRef"]["name"], "job envFrom");
    assert_eq!(
        k8s_env(migrate, "job")["RUN_MIGRATIONS"].as_deref(),
        Some("1")
    );
    // Only failures that would fail again end the Job at once; 3 (busy) and
    // 5 (unavailable) must stay retryable.
    let rules = as_vec(&spec["podFailurePolicy"]["rules"], "podFailurePolicy");
    for rule in rules
        .iter()
        .filter(|r| r["action"].as_str() == Some("FailJob"))
    {
        let codes: Vec<i64> = as_vec(&rule["onExitCodes"]["values"], "onExitCodes")
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert!(!codes.contains(&3) && !codes.contains(&5), "{codes:?}");
        assert_eq!(
            as_str(&rule["onExitCodes"]["containerName"], "rule"),
            as_str(&migrate["name"], "container")
        );
    }

    assert_eq!(as_str(&deployment["apiVersion"], "deployment"), "apps/v1");
    assert_eq!(as_str(&deployment["kind"], "deployment"), "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"].as_i64(), Some(uid));
    let inits = as_vec(&pod["initContainers"], "initContainers");
    assert_eq!(inits.len(), 1);
    let wait_argv = miglock_invocation(&inits[0], "initContainer");
    assert_eq!(wait_argv, ["wait", "--timeout", "5m"]);
    let app = &as_vec(&pod["containers"], "containers")[0];
    // No `command`: the image's ENTRYPOINT (the entrypoint script) runs and
    // starts the app without migrating, the initContainer having waited.
    assert!(
        app["command"].is_badvalue(),
        "app.command overrides the entrypoint"
    );
    assert!(!strings(&app["args"], "app.args").is_empty());
    assert_eq!(k8s_env(app, "app")["RUN_MIGRATIONS"].as_deref(), Some("0"));
    for container in inits.iter().chain([app]) {
        assert_eq!(
            as_str(&container["envFrom"][0]["secretRef"]["name"], "envFrom"),
            secret,
            "one Secret for the Job and the Deployment"
        );
        assert_eq!(container["image"], migrate["image"], "one release");
    }

    // Run them as the cluster would, against a real database: a new pod's
    // initContainer blocks, the Job migrates, the initContainer returns.
    let db = Cluster::shared().create_db();
    let run = |argv: &[String], env: BTreeMap<String, Option<String>>| {
        let mut m = Miglock::for_db(&db);
        m.args(argv).env("MIGLOCK_MIGRATIONS", example_migrations());
        for (key, value) in env {
            if let Some(value) = value {
                m.env(key, value);
            }
        }
        m
    };
    let init = run(&wait_argv, k8s_env(&inits[0], "initContainer")).spawn();
    wait_until(SETTLE, || sessions_like(&db, "miglock wait %") == 1);
    let out = run(&job_argv, k8s_env(migrate, "job")).run();
    out.assert_success()
        .assert_stderr_contains("MIGRATION_APPLIED");
    RunOutput::from_child(init)
        .assert_success()
        .assert_stderr_contains("SCHEMA_CURRENT");
    assert_eq!(db.history(), example_migration_versions());
}

/// The fleet's Indexed Job: three pods, each with its JOB_COMPLETION_INDEX,
/// run `--shards 3` over one list of targets; together they apply every
/// target exactly once, and each says which shard it ran.
#[test]
fn kubernetes_indexed_job_shards_the_fleet_so_each_target_runs_once() {
    let job = load_yaml("examples/kubernetes/fleet-job.yaml");
    assert_eq!(as_str(&job["kind"], "job"), "Job");
    let spec = &job["spec"];
    assert_eq!(as_str(&spec["completionMode"], "job"), "Indexed");
    let completions = spec["completions"].as_i64().expect("completions");
    assert_eq!(spec["parallelism"].as_i64(), Some(completions));
    let pod = &spec["template"]["spec"];
    assert_eq!(as_str(&pod["restartPolicy"], "job"), "Never");
    assert_eq!(
        pod["securityContext"]["runAsUser"].as_i64(),
        Some(dockerfile_uid())
    );
    let migrate = &as_vec(&pod["containers"], "containers")[0];
    let mut argv = miglock_invocation(migrate, "fleet job");
    assert_eq!(argv[0], "apply");
    let at = |flag: &str| argv.iter().position(|a| a == flag).map(|i| i + 1);
    let shards = at("--shards").expect("--shards");
    assert_eq!(
        argv[shards],
        completions.to_string(),
        "--shards matches completions"
    );
    // The ConfigMap's file, mounted where --databases-from reads it.
    let from = at("--databases-from").expect("--databases-from");
    let mount = as_str(&migrate["volumeMounts"][0]["mountPath"], "volumeMounts");
    assert!(
        argv[from].starts_with(mount),
        "{} is not under {mount}",
        argv[from]
    );
    let env = k8s_env(migrate, "fleet job");
    assert_eq!(env["RUN_MIGRATIONS"].as_deref(), Some("1"));

    // Seven tenants, three pods.
    let tenants: Vec<TestDb> = (0..7).map(|_| Cluster::shared().create_db()).collect();
    let list = tempfile::NamedTempFile::new().unwrap();
    let lines: Vec<String> = tenants.iter().map(|db| db.url()).collect();
    fs::write(list.path(), lines.join("\n") + "\n").unwrap();
    argv[from] = list.path().display().to_string();
    argv.extend(["--format".into(), "json".into()]);
    let mut ran = 0;
    for index in 0..completions {
        let mut m = Miglock::new();
        m.args(&argv)
            .env("MIGLOCK_MIGRATIONS", example_migrations())
            .env("JOB_COMPLETION_INDEX", index.to_string());
        for (key, value) in &env {
            if let Some(value) = value {
                m.env(key, value);
            }
        }
        let out = m.run();
        out.assert_success().assert_stderr_contains(&format!(
            "(shard {index}/{completions} of {})",
            tenants.len()
        ));
        let json = out.json();
        assert_eq!(json["shard"]["index"], index);
        assert_eq!(json["shard"]["of"], tenants.len());
        ran += json["targets"].as_array().unwrap().len();
    }
    assert_eq!(ran, tenants.len(), "every target in exactly one shard");
    for db in &tenants {
        assert_eq!(
            db.history(),
            example_migration_versions(),
            "each target migrated once"
        );
    }
}

/// The `run:` script of the workflow's step that calls miglock.
fn workflow_apply_step(workflow: &Yaml) -> &Yaml {
    as_vec(&workflow["jobs"]["migrate"]["steps"], "steps")
        .iter()
        .find(|step| {
            step["run"]
                .as_str()
                .is_some_and(|run| run.contains("miglock apply"))
        })
        .expect("a step runs miglock apply")
}

#[test]
fn github_actions_workflow_migrates_a_postgres_service_container() {
    let workflow = load_yaml("examples/github-actions/migrate.yml");
    let job = &workflow["jobs"]["migrate"];
    let postgres = &job["services"]["postgres"];
    assert_eq!(as_str(&postgres["image"], "service"), "postgres:15");
    let options = as_str(&postgres["options"], "service options");
    for option in ["--health-cmd", "--health-interval", "--health-retries"] {
        assert!(options.contains(option), "{options}");
    }
    let port = strings(&postgres["ports"], "ports")[0].clone();
    let url = as_str(&job["env"]["DATABASE_URL"], "DATABASE_URL");
    assert!(
        url.contains(&format!("@localhost:{}/", port.split(':').next().unwrap())),
        "{url} does not reach the service's port {port}"
    );

    let step = workflow_apply_step(&workflow);
    assert_eq!(as_str(&step["shell"], "shell"), "bash");
    let script = as_str(&step["run"], "run");
    assert!(script.contains("miglock apply --format json"));
    assert!(script.contains("$GITHUB_STEP_SUMMARY"));
    // Expressions belong in `env:`: spliced into a script they are a
    // command-injection risk, and the script could not be run here.
    assert!(!script.contains("${{"), "{script}");
}

/// Runs the workflow step's script under bash as the runner would: miglock
/// on PATH, the job's environment with the test's database, and the files
/// GitHub provides for the summary and the step outputs.
fn run_workflow_step(db: &TestDb, migrations: &Path) -> (RunOutput, String, String) {
    let workflow = load_yaml("examples/github-actions/migrate.yml");
    let script = as_str(&workflow_apply_step(&workflow)["run"], "run").to_string();
    let work = tempfile::tempdir().unwrap();
    let summary = work.path().join("summary.md");
    let outputs = work.path().join("outputs");
    let bin_dir = Path::new(MIGLOCK).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut m = Miglock::for_db(db);
    m.program("bash")
        .args([
            "--noprofile",
            "--norc",
            "-eo",
            "pipefail",
            "-c",
            script.as_str(),
        ])
        .current_dir(work.path())
        .env("PATH", path)
        .env("MIGLOCK_MIGRATIONS", migrations)
        .env("MIGLOCK_INSTANCE", "ci-test")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GITHUB_OUTPUT", &outputs);
    let out = m.run();
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    (out, read(&summary), read(&outputs))
}

#[test]
fn github_actions_step_summarises_and_fails_with_miglock() {
    // The step's summary is made with jq, which GitHub's runners have. A
    // machine without it fails here rather than passing untested.
    match Command::new("jq").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "jq --version failed ({}): this test runs the workflow step, which needs a working jq\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "jq is not installed ({e}): this test runs the GitHub Actions step, which needs jq; \
             install it (Debian: apt-get install jq)"
        ),
    }
    let db = Cluster::shared().create_db();
    let (out, summary, outputs) = run_workflow_step(&db, &example_migrations());
    out.assert_success();
    assert!(
        summary.starts_with("### miglock apply: applied (exit 0)\n"),
        "{summary}"
    );
    assert!(summary.contains("| 1 | create_accounts |"), "{summary}");
    assert_eq!(outputs, "outcome=applied\n");
    assert_eq!(db.history(), example_migration_versions());

    let dir = two_migrations();
    dir.file("V3__broken.sql", "SELECT * FROM no_such_table;\n");
    let db = Cluster::shared().create_db();
    let (out, summary, outputs) = run_workflow_step(&db, dir.path());
    out.assert_code(1);
    assert!(
        summary.starts_with("### miglock apply: failed (exit 1)\n"),
        "{summary}"
    );
    assert!(summary.contains("| 2 | add_note |"), "{summary}");
    assert!(summary.contains("**Error:** "), "{summary}");
    assert!(summary.contains("(SQLSTATE 42P01)"), "{summary}");
    assert_eq!(outputs, "outcome=failed\n");
}

/// The Dockerfile's instructions, continuation lines joined, comments and
/// parser directives dropped: `(INSTRUCTION, arguments)`.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read_repo_file("examples/Dockerfile");
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                pending.push_str(part);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                let (word, rest) = pending.split_once(' ').unwrap_or((&pending, ""));
                instructions.push((word.to_uppercase(), rest.trim().to_string()));
                pending.clear();
            }
        }
    }
    instructions
}

/// The runtime stage's user id, which the Kubernetes files must match.
fn dockerfile_uid() -> i64 {
    let (_, user) = dockerfile_instructions()
        .into_iter()
        .rfind(|(word, _)| word == "USER")
        .expect("a USER instruction");
    user.split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("USER {user}: numeric, so that runAsNonRoot can check it"))
}

#[test]
fn dockerfile_builds_a_small_non_root_image_with_the_entrypoint() {
    let instructions = dockerfile_instructions();
    let stages: Vec<&str> = instructions
        .iter()
        .filter(|(word, _)| word == "FROM")
        .map(|(_, rest)| rest.as_str())
        .collect();
    assert_eq!(stages.len(), 3, "{stages:?}");
    // The Rust version build/symbol-order.txt names (build.rs).
    let list = read_repo_file("build/symbol-order.txt");
    let version = list
        .lines()
        .find_map(|line| line.strip_prefix("# rustc: rustc "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the list names its rustc");
    assert!(
        stages[0].starts_with(&format!("rust:{version}-bookworm AS builder")),
        "{stages:?}"
    );
    assert!(
        read_repo_file(".github/workflows/release.yml")
            .contains(&format!("uses: dtolnay/rust-toolchain@{version}\n")),
        "the release workflow builds with Rust {version}"
    );
    // miglock alone, for `COPY --from=miglock /miglock …` into other images.
    assert_eq!(stages[1], "scratch AS miglock", "{stages:?}");
    assert!(stages[2].starts_with("debian:bookworm-slim"), "{stages:?}");
    assert!(instructions
        .iter()
        .any(|(word, rest)| word == "COPY"
            && rest == "--from=builder /usr/local/bin/miglock /miglock"));
    let runtime_start = instructions
        .iter()
        .rposition(|(word, _)| word == "FROM")
        .unwrap();
    let (builder, runtime) = instructions.split_at(runtime_start);
    // Static (crt-static, with an explicit target), so that it runs in any image.
    assert!(builder.iter().any(|(word, rest)| word == "RUN"
        && rest.contains("cargo build --release --locked --target")
        && rest.contains("RUSTFLAGS=\"-C target-feature=+crt-static\"")));

    let copies: Vec<Vec<&str>> = runtime
        .iter()
        .filter(|(word, _)| word == "COPY")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .collect();
    let copy_to = |source: &str| -> String {
        let copy = copies
            .iter()
            .find(|words| words.contains(&source))
            .unwrap_or_else(|| panic!("no COPY of {source}: {copies:?}"));
        copy.last().unwrap().to_string()
    };
    assert_eq!(copy_to("--from=builder"), "/usr/local/bin/miglock");
    let entrypoint = copy_to("examples/entrypoint.sh");
    let migrations = copy_to("examples/migrations");
    // Every source copied from the build context exists in this repository.
    for (word, rest) in &instructions {
        if word == "COPY" && !rest.contains("--from=") {
            let words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            for source in &words[..words.len() - 1] {
                assert!(
                    repo_path(source).exists(),
                    "COPY {source}: not in the repository"
                );
            }
        }
    }

    let last = |name: &str| {
        runtime
            .iter()
            .rfind(|(word, _)| word == name)
            .map(|(_, rest)| rest.clone())
            .unwrap_or_else(|| panic!("no {name} in the runtime stage"))
    };
    assert_eq!(
        last("ENTRYPOINT"),
        format!("[\"{entrypoint}\"]"),
        "exec form"
    );
    assert_eq!(last("ENV"), format!("MIGLOCK_MIGRATIONS={migrations}"));
    let uid = dockerfile_uid();
    assert!(uid > 0, "USER must not be root");
    assert!(last("USER").starts_with(&uid.to_string()));
    // The ignore file that keeps target/ out of the repository-wide context.
    let ignore = read_repo_file("examples/Dockerfile.dockerignore");
    assert!(ignore.lines().any(|line| line.trim() == "target"));
}

/// Every fenced block of the README and of docs/ whose first line names an
/// example file (`# examples/...`) must be a verbatim excerpt of that file.
#[test]
fn readme_snippets_match_the_example_files() {
    let mut checked = BTreeMap::new();
    for doc in documents() {
        let text = read_repo_file(&doc);
        check_excerpts(&doc, &text, &mut checked);
    }
    for file in [
        "examples/Dockerfile",
        "examples/docker-compose.yml",
        "examples/kubernetes/migrate-job.yaml",
        "examples/kubernetes/deployment.yaml",
        "examples/kubernetes/fleet-job.yaml",
        "examples/github-actions/migrate.yml",
    ] {
        assert!(
            checked.contains_key(file),
            "no document has an excerpt of {file}: {checked:?}"
        );
    }
}

/// README.md and every Markdown file under docs/, as repository paths.
fn documents() -> Vec<String> {
    fn walk(dir: &std::path::Path, base: &std::path::Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, base, found);
            } else if path.extension().is_some_and(|e| e == "md") {
                found.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut found = vec!["README.md".to_string()];
    walk(&repo_path("docs"), &repo_path(""), &mut found);
    found.sort();
    found
}

/// Every fenced block of `text` whose first line names an example file
/// (`# examples/...`) must be a verbatim excerpt of that file.
fn check_excerpts(doc: &str, text: &str, checked: &mut BTreeMap<String, usize>) {
    let mut blocks = text.split("\n```").skip(1).step_by(2);
    for block in &mut blocks {
        let body = block.split_once('\n').map_or("", |(_, body)| body);
        let Some((first, excerpt)) = body.split_once('\n') else {
            continue;
        };
        let Some(file) = first
            .strip_prefix("# ")
            .filter(|f| f.starts_with("examples/"))
        else {
            continue;
        };
        let contents = read_repo_file(file);
        assert!(
            contents.contains(excerpt),
            "{doc}'s excerpt of {file} is not in the file:\n{excerpt}"
        );
        *checked.entry(file.to_string()).or_insert(0) += 1;
    }
}

/// Every relative link of README.md, docs/ and the other top-level
/// documents points at a file that exists and, with `#anchor`, at one of
/// its headings (GitHub's anchors: lower case, punctuation dropped, spaces
/// as hyphens). The docs are split over many files; a moved section must
/// not leave links behind.
#[test]
fn links_between_documents_resolve() {
    let mut docs = documents();
    docs.extend(["RELIABILITY.md", "BENCHMARKS.md", "CHANGELOG.md"].map(String::from));
    let mut broken = Vec::new();
    for doc in &docs {
        let text = outside_code_blocks(&read_repo_file(doc));
        for target in text
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split_once(')'))
        {
            let target = target.0;
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
            let file = if path.is_empty() {
                repo_path(doc)
            } else {
                repo_path(doc).parent().unwrap().join(path)
            };
            if !file.exists() {
                broken.push(format!("{doc}: {target}: no such file"));
            } else if !anchor.is_empty()
                && file.extension().is_some_and(|e| e == "md")
                && !anchors(&std::fs::read_to_string(&file).unwrap()).contains(&anchor.to_string())
            {
                broken.push(format!("{doc}: {target}: no such heading"));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

fn outside_code_blocks(text: &str) -> String {
    text.split("```").step_by(2).collect::<Vec<_>>().join("\n")
}

fn anchors(markdown: &str) -> Vec<String> {
    outside_code_blocks(markdown)
        .lines()
        .filter(|line| line.starts_with('#'))
        .filter_map(|line| line.trim_start_matches('#').strip_prefix(' '))
        .map(|title| {
            title
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

/// RELIABILITY.md says every test it names runs in CI: each `a::b::name`
/// it cites is a test function of this suite.
#[test]
fn reliability_names_only_tests_that_exist() {
    fn functions(dir: &std::path::Path, found: &mut BTreeMap<String, ()>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                functions(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for rest in text.split("fn ").skip(1) {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    found.insert(name, ());
                }
            }
        }
    }
    let mut tests = BTreeMap::new();
    functions(&repo_path("tests/integration"), &mut tests);
    let text = read_repo_file("RELIABILITY.md");
    let cited: Vec<&str> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| {
            span.contains("::")
                && !span.ends_with("::")
                && span
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':')
        })
        .collect();
    assert!(cited.len() > 50, "{} test names found", cited.len());
    let missing: Vec<&&str> = cited
        .iter()
        .filter(|path| !tests.contains_key(path.rsplit("::").next().unwrap()))
        .collect();
    assert!(
        missing.is_empty(),
        "RELIABILITY.md names tests that do not exist: {missing:?}"
    );
}
