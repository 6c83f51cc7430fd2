"""``kaito ps``: the Workspaces running on this machine, with the operator's conditions."""

from __future__ import annotations


def register(sub) -> None:
    from kaito_core.cli.output import add_output_flag

    p = sub.add_parser("ps", help="list the Workspaces `kaito up` runs on this machine, with their conditions")
    p.add_argument("-w", "--wide", action="store_true", help="also show each condition's reason and message")
    add_output_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from kaito_core.cli.output import dump_json, table
    from kaito_core.local import status as st
    from kaito_core.local.workspaces import all_workspaces

    found = all_workspaces()
    if args.output == "json":
        dump_json([w.to_dict() for w in found])
        return 0
    if not found:
        print("no Workspaces are running here; start one with `kaito up FILE`")
        return 0
    rows = []
    for w in found:
        s = w.status()
        rows.append([w.name, w.launch.mode, w.launch.preset, w.launch.endpoint or w.launch.output or "-",
                     st.condition_status(s, st.RESOURCE_READY), st.condition_status(s, st.INFERENCE_READY),
                     st.condition_status(s, st.JOB_STARTED), st.condition_status(s, st.WORKSPACE_SUCCEEDED),
                     s.get("state", ""), (s.get("local") or {}).get("restarts", 0), w.age()])
    # The columns of `kubectl get workspace` (upstream's printer columns), plus where to reach it.
    table(["NAME", "MODE", "PRESET", "ENDPOINT/OUTPUT", "RESOURCEREADY", "INFERENCEREADY", "JOBSTARTED",
           "WORKSPACESUCCEEDED", "STATE", "RESTARTS", "AGE"], rows)
    for w in found:
        s = w.status()
        for cond in s.get("conditions") or []:
            if args.wide or (cond.get("status") != "True" and cond.get("reason") not in (st.R_JOB_RUNNING,)):
                if not args.wide and cond.get("type") == st.WORKSPACE_SUCCEEDED and \
                        w.launch.mode == "inference":
                    continue  # mirrors InferenceReady
                print(f"{w.name}: {cond.get('type')}={cond.get('status')} {cond.get('reason')}: {cond.get('message')}")
    return 0
