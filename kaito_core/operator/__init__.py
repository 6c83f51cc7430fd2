"""The KAITO operator: kopf handlers and admission webhooks around the pure reconciler.

Layers: :mod:`.settings` (env/CLI), :mod:`.kube` (a small REST client, the provisioners'
KubeAPI), :mod:`.apply` (one reconcile pass, no kopf), :mod:`.admission` (webhook rules, no
kopf), :mod:`.handlers` (kopf), :mod:`.rbac` (the permissions all of it needs). Importing this
package imports nothing heavy.
"""
