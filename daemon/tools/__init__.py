"""The commands beside the service: demo, simulate, client, export (and hcs), config, reprocess/.
May import any stage of daemon and engines; no stage imports a tool."""
