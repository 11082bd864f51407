from services.gateway.service import run

run()
