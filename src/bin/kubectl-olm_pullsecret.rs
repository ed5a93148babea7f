//! The kubectl plugin: `kubectl olm-pullsecret explain|cleanup|completion` (see
//! `commands::plugin`). Install it on the PATH as `kubectl-olm_pullsecret`.

fn main() -> std::process::ExitCode {
    olm_pullsecret_injector::commands::plugin::main()
}
