from sandboxd.runtime.egressproxy.service import run

run()
