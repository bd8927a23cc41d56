// Extensions of govmomi 0.24's ESX model: the managers and methods a bootbox ESXi host profile
// uses that the simulator does not implement (or implements as a no-op). Each one is listed in
// README.md beside this file; they use the simulator's documented extension mechanism
// (simulator/example_extend_test.go: put an object with SOAP-named methods at a managed-object
// reference), and behave as ESXi documents the call, not as bootbox expects.
package main

import (
	"fmt"
	"net/url"
	"strings"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/esx"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// ------------------------------------------------------------------------- licence editions

// freeEdition is the edition key of the free vSphere Hypervisor licence, whose API is read-only.
const freeEdition = "esxBasic"

// licenses is the host's LicenseManager, read by restricted().
var licenses *simulator.LicenseManager

// restricted is the fault ESXi answers every configuration write with when its licence is the
// free vSphere Hypervisor (vim.fault.RestrictedVersion), or nil.
func restricted() *soap.Fault {
	if licenses != nil && len(licenses.Licenses) > 0 && licenses.Licenses[0].EditionKey == freeEdition {
		return simulator.Fault("Current license or ESXi version prohibits execution of the requested operation.",
			&types.RestrictedVersion{})
	}
	return nil
}

// ------------------------------------------------------------------------- HostDateTimeSystem

// DateTimeSystem is ESXi's HostDateTimeSystem (NTP servers, time zone), which 0.24 lacks.
type DateTimeSystem struct {
	mo.HostDateTimeSystem
}

func (s *DateTimeSystem) UpdateDateTimeConfig(req *types.UpdateDateTimeConfig) soap.HasFault {
	body := &methods.UpdateDateTimeConfigBody{}
	if body.Fault_ = restricted(); body.Fault_ != nil {
		return body
	}
	if req.Config.TimeZone != "" && req.Config.TimeZone != "UTC" {
		body.Fault_ = simulator.Fault("ESXi keeps its clock in UTC", &types.InvalidArgument{InvalidProperty: "timeZone"})
		return body
	}
	if req.Config.NtpConfig != nil {
		ntp := *req.Config.NtpConfig
		ntp.Server = append([]string(nil), ntp.Server...)
		s.DateTimeInfo.NtpConfig = &ntp
	}
	body.Res = &types.UpdateDateTimeConfigResponse{}
	return body
}

func (s *DateTimeSystem) RefreshDateTimeSystem(req *types.RefreshDateTimeSystem) soap.HasFault {
	return &methods.RefreshDateTimeSystemBody{Res: &types.RefreshDateTimeSystemResponse{}}
}

// ------------------------------------------------------------------------- HostServiceSystem

// ServiceSystem is ESXi's HostServiceSystem (SSH, ESXi Shell, NTP daemon ...), which 0.24 lacks.
type ServiceSystem struct {
	mo.HostServiceSystem
}

func (s *ServiceSystem) find(id string) *types.HostService {
	for i := range s.ServiceInfo.Service {
		if s.ServiceInfo.Service[i].Key == id {
			return &s.ServiceInfo.Service[i]
		}
	}
	return nil
}

func notFound(what string) *soap.Fault {
	return simulator.Fault(what+" not found", &types.NotFound{})
}

func (s *ServiceSystem) UpdateServicePolicy(req *types.UpdateServicePolicy) soap.HasFault {
	body := &methods.UpdateServicePolicyBody{}
	if body.Fault_ = restricted(); body.Fault_ != nil {
		return body
	}
	svc := s.find(req.Id)
	switch {
	case svc == nil:
		body.Fault_ = notFound("service " + req.Id)
	case req.Policy != "on" && req.Policy != "off" && req.Policy != "automatic":
		body.Fault_ = simulator.Fault("", &types.InvalidArgument{InvalidProperty: "policy"})
	default:
		svc.Policy = req.Policy
		body.Res = &types.UpdateServicePolicyResponse{}
	}
	return body
}

func (s *ServiceSystem) StartService(req *types.StartService) soap.HasFault {
	body := &methods.StartServiceBody{}
	if body.Fault_ = restricted(); body.Fault_ != nil {
		return body
	}
	if svc := s.find(req.Id); svc != nil {
		svc.Running = true
		body.Res = &types.StartServiceResponse{}
	} else {
		body.Fault_ = notFound("service " + req.Id)
	}
	return body
}

func (s *ServiceSystem) StopService(req *types.StopService) soap.HasFault {
	body := &methods.StopServiceBody{}
	if body.Fault_ = restricted(); body.Fault_ != nil {
		return body
	}
	if svc := s.find(req.Id); svc != nil {
		svc.Running = false
		body.Res = &types.StopServiceResponse{}
	} else {
		body.Fault_ = notFound("service " + req.Id)
	}
	return body
}

func (s *ServiceSystem) RestartService(req *types.RestartService) soap.HasFault {
	body := &methods.RestartServiceBody{}
	if body.Fault_ = restricted(); body.Fault_ != nil {
		return body
	}
	if svc := s.find(req.Id); svc != nil {
		svc.Running = true
		body.Res = &types.RestartServiceResponse{}
	} else {
		body.Fault_ = notFound("service " + req.Id)
	}
	return body
}

func (s *ServiceSystem) RefreshServices(req *types.RefreshServices) soap.HasFault {
	return &methods.RefreshServicesBody{Res: &types.RefreshServicesResponse{}}
}

// ------------------------------------------------------------------------- HostNetworkSystem

// NetworkSystem wraps the simulator's HostNetworkSystem: it keeps a vSwitch's spec (MTU, ports,
// uplinks) on add and update, and adds DNS, VMkernel NICs and port-group updates.
type NetworkSystem struct {
	*simulator.HostNetworkSystem
	host   *simulator.HostSystem
	nextVmk int
}

// Get lets the PropertyCollector see the wrapped managed object (a wrapper must have it).
func (s *NetworkSystem) Get() mo.Reference { return s.HostNetworkSystem }

func (s *NetworkSystem) vswitch(name string) *types.HostVirtualSwitch {
	for i := range s.NetworkInfo.Vswitch {
		if s.NetworkInfo.Vswitch[i].Name == name {
			return &s.NetworkInfo.Vswitch[i]
		}
	}
	return nil
}

// setSpec applies a vSwitch spec as ESXi does: every uplink must be a physical NIC of the host.
func (s *NetworkSystem) setSpec(vs *types.HostVirtualSwitch, spec *types.HostVirtualSwitchSpec) *soap.Fault {
	var pnics []string
	if bond, ok := spec.Bridge.(*types.HostVirtualSwitchBondBridge); ok && bond != nil {
		for _, dev := range bond.NicDevice {
			found := false
			for _, pnic := range s.host.Config.Network.Pnic {
				if pnic.Device == dev {
					found = true
					pnics = append(pnics, pnic.Key)
				}
			}
			if !found {
				return simulator.Fault(fmt.Sprintf("physical NIC %s not found", dev), &types.NotFound{})
			}
		}
	}
	if spec.Mtu != 0 && (spec.Mtu < 1280 || spec.Mtu > 9000) {
		return simulator.Fault("", &types.InvalidArgument{InvalidProperty: "mtu"})
	}
	vs.Spec = *spec
	vs.Mtu = spec.Mtu
	if vs.Mtu == 0 {
		vs.Mtu = 1500
	}
	vs.NumPorts = spec.NumPorts
	vs.Pnic = pnics
	return nil
}

func (s *NetworkSystem) AddVirtualSwitch(req *types.AddVirtualSwitch) soap.HasFault {
	body := &methods.AddVirtualSwitchBody{}
	if body.Fault_ = restricted(); body.Fault_ != nil {
		return body
	}
	if s.vswitch(req.VswitchName) != nil {
		body.Fault_ = simulator.Fault("", &types.AlreadyExists{Name: req.VswitchName})
		return body
	}
	vs := types.HostVirtualSwitch{Name: req.VswitchName, Key: "key-vim.host.VirtualSwitch-" + req.VswitchName}
	spec := types.HostVirtualSwitchSpec{NumPorts: 128}
	if req.Spec != nil {
		spec = *req.Spec
	}
	if fault := s.setSpec(&vs, &spec); fault != nil {
		body.Fault_ = fault
		return body
	}
	s.NetworkInfo.Vswitch = append(s.NetworkInfo.Vswitch, vs)
	body.Res = &types.AddVirtualSwitchResponse{}
	return body
}

func (s *NetworkSystem) UpdateVirtualSwitch(req *types.UpdateVirtualSwitch) soap.HasFault {
	body := &methods.UpdateVirtualSwitchBody{}
	if body.Fault_ = restricted(); body.Fault_ != nil {
		return body
	}
	vs := s.vswitch(req.VswitchName)
	if vs == nil {
		body.Fault_ = notFound("vSwitch " + req.VswitchName)
		return body
	}
	if fault := s.setSpec(vs, &req.Spec); fault != nil {
		body.Fault_ = fault
		return body
	}
	body.Res = &types.UpdateVirtualSwitchResponse{}
	return body
}

func (s *NetworkSystem) UpdatePortGroup(req *types.UpdatePortGroup) soap.HasFault {
	body := &methods.UpdatePortGroupBody{}
	if body.Fault_ = restricted(); body.Fault_ != nil {
		return body
	}
	for i := range s.NetworkInfo.Portgroup {
		pg := &s.NetworkInfo.Portgroup[i]
		if pg.Spec.Name != req.PgName {
			continue
		}
		if req.Portgrp.Name != req.PgName {
			body.Fault_ = simulator.Fault("renaming a port group is not supported here", &types.InvalidArgument{InvalidProperty: "portgrp.name"})
			return body
		}
		if s.vswitch(req.Portgrp.VswitchName) == nil {
			body.Fault_ = notFound("vSwitch " + req.Portgrp.VswitchName)
			return body
		}
		pg.Spec = req.Portgrp
		body.Res = &types.UpdatePortGroupResponse{}
		return body
	}
	body.Fault_ = notFound("port group " + req.PgName)
	return body
}

func (s *NetworkSystem) portgroupExists(name string) bool {
	for _, pg := range s.NetworkInfo.Portgroup {
		if pg.Spec.Name == name {
			return true
		}
	}
	return false
}

func (s *NetworkSystem) AddVirtualNic(req *types.AddVirtualNic) soap.HasFault {
	body := &methods.AddVirtualNicBody{}
	if body.Fault_ = restricted(); body.Fault_ != nil {
		return body
	}
	if !s.portgroupExists(req.Portgroup) {
		body.Fault_ = notFound("port group " + req.Portgroup)
		return body
	}
	for _, vnic := range s.NetworkInfo.Vnic {
		if vnic.Portgroup == req.Portgroup {
			body.Fault_ = simulator.Fault("", &types.AlreadyExists{Name: req.Portgroup})
			return body
		}
	}
	device := fmt.Sprintf("vmk%d", s.nextVmk)
	s.nextVmk++
	spec := req.Nic
	spec.Portgroup = req.Portgroup
	if spec.Mtu == 0 {
		spec.Mtu = 1500
	}
	s.NetworkInfo.Vnic = append(s.NetworkInfo.Vnic, types.HostVirtualNic{
		Device: device, Key: "key-vim.host.VirtualNic-" + device, Portgroup: req.Portgroup, Spec: spec,
	})
	body.Res = &types.AddVirtualNicResponse{Returnval: device}
	return body
}

func (s *NetworkSystem) UpdateVirtualNic(req *types.UpdateVirtualNic) soap.HasFault {
	body := &methods.UpdateVirtualNicBody{}
	if body.Fault_ = restricted(); body.Fault_ != nil {
		return body
	}
	for i := range s.NetworkInfo.Vnic {
		vnic := &s.NetworkInfo.Vnic[i]
		if vnic.Device == req.Device {
			spec := req.Nic
			spec.Portgroup = vnic.Portgroup
			if spec.Mtu == 0 {
				spec.Mtu = vnic.Spec.Mtu
			}
			if spec.Ip == nil {
				spec.Ip = vnic.Spec.Ip
			}
			vnic.Spec = spec
			body.Res = &types.UpdateVirtualNicResponse{}
			return body
		}
	}
	body.Fault_ = notFound("virtual NIC " + req.Device)
	return body
}

func (s *NetworkSystem) RemoveVirtualNic(req *types.RemoveVirtualNic) soap.HasFault {
	body := &methods.RemoveVirtualNicBody{}
	if body.Fault_ = restricted(); body.Fault_ != nil {
		return body
	}
	for i, vnic := range s.NetworkInfo.Vnic {
		if vnic.Device == req.Device {
			s.NetworkInfo.Vnic = append(s.NetworkInfo.Vnic[:i], s.NetworkInfo.Vnic[i+1:]...)
			body.Res = &types.RemoveVirtualNicResponse{}
			return body
		}
	}
	body.Fault_ = notFound("virtual NIC " + req.Device)
	return body
}

func (s *NetworkSystem) UpdateDnsConfig(req *types.UpdateDnsConfig) soap.HasFault {
	body := &methods.UpdateDnsConfigBody{}
	if body.Fault_ = restricted(); body.Fault_ != nil {
		return body
	}
	cfg, ok := req.Config.(*types.HostDnsConfig)
	if !ok || cfg == nil {
		body.Fault_ = simulator.Fault("", &types.InvalidArgument{InvalidProperty: "config"})
		return body
	}
	copied := *cfg
	copied.Address = append([]string(nil), cfg.Address...)
	copied.SearchDomain = append([]string(nil), cfg.SearchDomain...)
	s.NetworkInfo.DnsConfig = &copied
	s.DnsConfig = &copied
	s.host.Config.Network.DnsConfig = &copied
	body.Res = &types.UpdateDnsConfigResponse{}
	return body
}

// ------------------------------------------------------------------------- HostLocalAccountManager

// AccountManager wraps the simulator's HostLocalAccountManager: UpdateUser really changes a
// password (0.24's is a no-op), and the login account's new password is the one Login takes.
type AccountManager struct {
	*simulator.HostLocalAccountManager
	service *simulator.Service
	mu      sync.Mutex
}

func (m *AccountManager) Get() mo.Reference { return m.HostLocalAccountManager }

func (m *AccountManager) UpdateUser(req *types.UpdateUser) soap.HasFault {
	body := &methods.UpdateUserBody{}
	if body.Fault_ = restricted(); body.Fault_ != nil {
		return body
	}
	spec := req.User.GetHostAccountSpec()
	login := m.service.Listen.User
	if login != nil && spec.Id == login.Username() {
		if spec.Password != "" {
			m.mu.Lock()
			m.service.Listen.User = url.UserPassword(spec.Id, spec.Password)
			m.mu.Unlock()
		}
		body.Res = &types.UpdateUserResponse{}
		return body
	}
	found := simulator.Map.UserDirectory().RetrieveUserGroups(&types.RetrieveUserGroups{SearchStr: spec.Id, ExactMatch: true, FindUsers: true})
	if res, ok := found.(*methods.RetrieveUserGroupsBody); !ok || res.Res == nil || len(res.Res.Returnval) == 0 {
		body.Fault_ = simulator.Fault("", &types.UserNotFound{Principal: spec.Id})
		return body
	}
	body.Res = &types.UpdateUserResponse{}
	return body
}

// ------------------------------------------------------------------------- LicenseManager

// LicenseManager wraps the simulator's: UpdateLicense sets the host's licence, as on a
// standalone ESXi host (0.24 has only Add/RemoveLicense, the vCenter inventory calls).
type LicenseManager struct {
	*simulator.LicenseManager
}

func (m *LicenseManager) Get() mo.Reference { return m.LicenseManager }

func (m *LicenseManager) UpdateLicense(req *types.UpdateLicense) soap.HasFault {
	body := &methods.UpdateLicenseBody{}
	if body.Fault_ = restricted(); body.Fault_ != nil {
		return body
	}
	key := strings.TrimSpace(req.LicenseKey)
	if len(strings.Split(key, "-")) != 5 {
		body.Fault_ = simulator.Fault("", &types.InvalidLicense{LicenseContent: key})
		return body
	}
	info := types.LicenseManagerLicenseInfo{LicenseKey: key, EditionKey: "esx.enterprisePlus.cpuPackage", Name: "VMware vSphere 7 Enterprise Plus", Labels: req.Labels}
	m.Licenses = []types.LicenseManagerLicenseInfo{info}
	body.Res = &types.UpdateLicenseResponse{Returnval: info}
	return body
}

// ------------------------------------------------------------------------- HostDatastoreSystem

// DatastoreSystem wraps the simulator's: an NFS datastore records its mount on the host with
// the access mode asked for (0.24 drops it), which is where ESXi reports a read-only mount.
type DatastoreSystem struct {
	*simulator.HostDatastoreSystem
}

func (d *DatastoreSystem) Get() mo.Reference { return d.HostDatastoreSystem }

func (d *DatastoreSystem) CreateNasDatastore(ctx *simulator.Context, req *types.CreateNasDatastore) soap.HasFault {
	if fault := restricted(); fault != nil {
		return &methods.CreateNasDatastoreBody{Fault_: fault}
	}
	res := d.HostDatastoreSystem.CreateNasDatastore(ctx, req)
	body, ok := res.(*methods.CreateNasDatastoreBody)
	if !ok || body.Res == nil {
		return res
	}
	if ds, ok := simulator.Map.Get(body.Res.Returnval).(*simulator.Datastore); ok {
		mode := req.Spec.AccessMode
		if mode == "" {
			mode = string(types.HostMountModeReadWrite)
		}
		mounted, accessible := true, true
		ds.Host = append(ds.Host, types.DatastoreHostMount{
			Key:       d.Host.Reference(),
			MountInfo: types.HostMountInfo{Path: req.Spec.LocalPath, AccessMode: mode, Mounted: &mounted, Accessible: &accessible},
		})
	}
	return res
}

// AddPortGroup and CreateUser: the simulator's own, refused under the free licence.
func (s *NetworkSystem) AddPortGroup(ctx *simulator.Context, req *types.AddPortGroup) soap.HasFault {
	if fault := restricted(); fault != nil {
		return &methods.AddPortGroupBody{Fault_: fault}
	}
	return s.HostNetworkSystem.AddPortGroup(ctx, req)
}

func (m *AccountManager) CreateUser(req *types.CreateUser) soap.HasFault {
	if fault := restricted(); fault != nil {
		return &methods.CreateUserBody{Fault_: fault}
	}
	return m.HostLocalAccountManager.CreateUser(req)
}

// FirewallSystem and OptionManager wrap the simulator's only to refuse writes under the free licence.
type FirewallSystem struct {
	*simulator.HostFirewallSystem
}

func (f *FirewallSystem) Get() mo.Reference { return f.HostFirewallSystem }

func (f *FirewallSystem) EnableRuleset(req *types.EnableRuleset) soap.HasFault {
	if fault := restricted(); fault != nil {
		return &methods.EnableRulesetBody{Fault_: fault}
	}
	return f.HostFirewallSystem.EnableRuleset(req)
}

func (f *FirewallSystem) DisableRuleset(req *types.DisableRuleset) soap.HasFault {
	if fault := restricted(); fault != nil {
		return &methods.DisableRulesetBody{Fault_: fault}
	}
	return f.HostFirewallSystem.DisableRuleset(req)
}

type OptionManager struct {
	*simulator.OptionManager
}

func (o *OptionManager) Get() mo.Reference { return o.OptionManager }

func (o *OptionManager) UpdateOptions(req *types.UpdateOptions) soap.HasFault {
	if fault := restricted(); fault != nil {
		return &methods.UpdateOptionsBody{Fault_: fault}
	}
	return o.OptionManager.UpdateOptions(req)
}

// ------------------------------------------------------------------------- wiring

func extend(service *simulator.Service, edition string) {
	host := simulator.Map.Any("HostSystem").(*simulator.HostSystem)
	cm := &host.ConfigManager

	dt := &DateTimeSystem{}
	dt.Self = *cm.DateTimeSystem
	dt.DateTimeInfo = types.HostDateTimeInfo{
		TimeZone:  types.HostDateTimeSystemTimeZone{Key: "UTC", Name: "UTC", Description: "UTC"},
		NtpConfig: &types.HostNtpConfig{},
	}
	simulator.Map.Put(dt)

	svc := &ServiceSystem{}
	svc.Self = *cm.ServiceSystem
	svc.ServiceInfo.Service = []types.HostService{
		{Key: "DCUI", Label: "Direct Console UI", Required: false, Running: true, Policy: "on"},
		{Key: "TSM", Label: "ESXi Shell", Running: false, Policy: "off"},
		{Key: "TSM-SSH", Label: "SSH", Running: false, Policy: "off", Ruleset: []string{"sshServer"}},
		{Key: "ntpd", Label: "NTP Daemon", Running: false, Policy: "off", Ruleset: []string{"ntpClient"}},
		{Key: "snmpd", Label: "SNMP Server", Running: false, Policy: "on", Ruleset: []string{"snmp"}},
		{Key: "vpxa", Label: "VMware vCenter Agent", Required: true, Running: false, Policy: "on", Ruleset: []string{"vpxHeartbeats"}},
	}
	simulator.Map.Put(svc)

	ns := simulator.Map.Get(*cm.NetworkSystem).(*simulator.HostNetworkSystem)
	ns.NetworkInfo.Vnic = append([]types.HostVirtualNic(nil), host.Config.Network.Vnic...)
	if dns, ok := host.Config.Network.DnsConfig.(*types.HostDnsConfig); ok && dns != nil {
		copied := *dns
		ns.NetworkInfo.DnsConfig = &copied
		ns.DnsConfig = &copied
	}
	for i := range ns.NetworkInfo.Vswitch {
		if ns.NetworkInfo.Vswitch[i].Name == host.Config.Network.Vswitch[0].Name {
			ns.NetworkInfo.Vswitch[i] = host.Config.Network.Vswitch[0]
			ns.NetworkInfo.Vswitch[i].Portgroup = append([]string(nil), host.Config.Network.Vswitch[0].Portgroup...)
		}
	}
	simulator.Map.Put(&NetworkSystem{HostNetworkSystem: ns, host: host, nextVmk: len(ns.NetworkInfo.Vnic)})

	am := simulator.Map.Get(*esx.ServiceContent.AccountManager).(*simulator.HostLocalAccountManager)
	simulator.Map.Put(&AccountManager{HostLocalAccountManager: am, service: service})

	dss := simulator.Map.Get(*cm.DatastoreSystem).(*simulator.HostDatastoreSystem)
	simulator.Map.Put(&DatastoreSystem{HostDatastoreSystem: dss})

	lm := simulator.Map.Get(*esx.ServiceContent.LicenseManager).(*simulator.LicenseManager)
	simulator.Map.Put(&LicenseManager{LicenseManager: lm})
	licenses = lm
	if edition == "free" {
		lm.Licenses = []types.LicenseManagerLicenseInfo{{LicenseKey: "FREE0-00000-00000-00000-00000",
			EditionKey: freeEdition, Name: "VMware vSphere 7 Hypervisor"}}
	}

	fw := simulator.Map.Get(*cm.FirewallSystem).(*simulator.HostFirewallSystem)
	simulator.Map.Put(&FirewallSystem{HostFirewallSystem: fw})
	om := simulator.Map.Get(*cm.AdvancedOption).(*simulator.OptionManager)
	simulator.Map.Put(&OptionManager{OptionManager: om})
}
