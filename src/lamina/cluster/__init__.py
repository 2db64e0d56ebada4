"""Cluster mode: execution environments on the nodes of a Ray cluster.

One Lamina, many machines. Every front end (`lamina serve --cluster ray://HEAD:10001`
with a shared PostgreSQL `database_url`) serves the whole API; where an invocation
runs is decided below `invoke`, by the placement (invoke/placement.py):

- agent.py: one node agent per Ray node that advertises `cluster_node_resource`, an
  async actor pinned to its node. It owns that node's EnvironmentPool (sandboxes,
  warm and provisioned environments), fetches code and layers by digest from the
  front end that asked (GET /_lamina/code/<sha>.zip, signed) into a per-node cache,
  and sends back with each outcome the lifecycle events and log lines the
  environment produced, which the front end feeds to its metrics and log store.
- ledger.py: the cluster-wide concurrency ledger (a named detached actor on the
  head node): account and reserved concurrency hold across every front end.
- placement.py: ClusterPlacement, the front end's side: picks a node (one with an
  idle warm environment of the version, else the one with the most free memory),
  takes the ledger's slot, and turns a node lost mid-invocation into AWS's
  ServiceException.

`ray` is imported only by placement.py and status.py, i.e. only in cluster mode.
"""
